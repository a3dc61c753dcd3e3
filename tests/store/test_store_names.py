"""A store file has one name: a hard link to it is refused (``refuse_other_names``).

SQLite keeps the write-ahead log, and trio_sync its lock file, beside the name a store is
opened by. Under a second name the store takes no lock against the first and does not
see the first name's log: before the refusal, two writers shared one client id (the
second's commits lost), and a reopen by the other name after a crash missed events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trio_sync import StoreError, StoreInUse
from trio_sync.store import ClientStore, ServerStore


def test_a_hard_link_to_a_store_in_use_is_refused_in_this_process(tmp_path: Path) -> None:
    # What was tried: a second open, in the same process, through a hard link made while
    # the store is open. It opened, with its own lock file and its own write-ahead log.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    state = store.load_state()
    store.append_pending(state.commit("x", {"i": 1}))
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    with pytest.raises(StoreError) as caught:
        ClientStore.open(str(tmp_path / "link.sqlite3"))
    message = str(caught.value)
    assert not isinstance(caught.value, StoreInUse)
    assert "has 2 names (hard links" in message
    assert str(tmp_path / "c.sqlite3") in message  # the other name, found in the folder
    assert "has a write-ahead log" in message  # c.sqlite3-wal: in use by that name
    assert "copy it" in message
    assert not (tmp_path / "link.sqlite3-wal").exists()  # nothing was written under it
    store.append_pending(state.commit("x", {"i": 2}))  # the first name goes on
    assert [e.args["i"] for e in store.load_state().pending] == [1, 2]
    store.close()


def test_a_hard_link_to_a_store_in_use_is_refused_in_another_process(tmp_path: Path) -> None:
    # What was tried: another process opens the hard link and commits as the same client.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    state = store.load_state()
    store.append_pending(state.commit("x", {"i": 1}))
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    code = textwrap.dedent(f"""
        from trio_sync import StoreError
        from trio_sync.protocol import SyncState
        from trio_sync.store import ClientStore
        try:
            other = ClientStore.open({str(tmp_path / "link.sqlite3")!r}, "A")
        except StoreError as exc:
            print("refused:", exc)
        else:
            other.append_pending(SyncState("A").commit("x", {{"i": 99}}))
            print("opened")
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith("refused: store") and "2 names" in result.stdout
    store.append_pending(state.commit("x", {"i": 2}))
    assert [e.args["i"] for e in store.load_state().pending] == [1, 2]
    store.close()


CRASH_SCRIPT = """
import os, sys
from trio_sync.store import ClientStore
store = ClientStore.open(sys.argv[1], "A")
state = store.load_state()
for i in range(3):
    store.append_pending(state.commit("x", {"i": i}))
print("committed", flush=True)
sys.stdin.read()  # killed here, its log not checkpointed
"""


def test_a_reopen_by_another_name_after_a_crash_is_refused_and_names_the_log(
    tmp_path: Path,
) -> None:
    # What was tried: a process commits 3 events and is killed with SIGKILL (the events
    # are in c.sqlite3-wal only); the store is reopened through a hard link. It opened
    # without the 3 events: the log beside the first name is not the second name's.
    path = tmp_path / "c.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "committed\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stdin.close()
    assert (tmp_path / "c.sqlite3-wal").stat().st_size > 0
    os.link(path, tmp_path / "renamed.sqlite3")
    with pytest.raises(StoreError, match="has a write-ahead log") as caught:
        ClientStore.open(str(tmp_path / "renamed.sqlite3"), "A")
    assert f"{str(path)!r} has a write-ahead log" in str(caught.value)
    # The way out the message gives: remove the other name, open by the one with the log.
    os.unlink(tmp_path / "renamed.sqlite3")
    store = ClientStore.open(str(path), "A")
    assert [e.args["i"] for e in store.load_state().pending] == [0, 1, 2]
    store.close()


def test_a_closed_store_with_two_names_opens_by_neither_until_one_is_removed(
    tmp_path: Path,
) -> None:
    # What was tried: a backup made with a hard link (as `cp -al` does) of a closed store.
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "backup.sqlite3")
    for name in ("c.sqlite3", "backup.sqlite3"):
        with pytest.raises(StoreError, match="has 2 names") as caught:
            ClientStore.open(str(tmp_path / name), "A")
        assert "write-ahead log" not in str(caught.value).split(". SQLite")[0]
    os.unlink(tmp_path / "backup.sqlite3")
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    assert store.load_state().client_id == "A"
    store.close()


def test_a_link_in_another_folder_is_refused_without_naming_it(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "elsewhere" / "c.sqlite3")
    with pytest.raises(StoreError, match="its other name is in another folder"):
        ClientStore.open(str(tmp_path / "c.sqlite3"), "A")


def test_a_symbolic_link_is_not_another_name(tmp_path: Path) -> None:
    # A symbolic link resolves to the same name: same lock, same log. Still allowed.
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    (tmp_path / "link.sqlite3").symlink_to(tmp_path / "c.sqlite3")
    store = ClientStore.open(str(tmp_path / "link.sqlite3"), "A")
    assert store.load_state().client_id == "A"
    store.close()


def test_a_server_store_with_two_names_is_refused_too(tmp_path: Path) -> None:
    ServerStore.open(str(tmp_path / "s.sqlite3")).close()
    os.link(tmp_path / "s.sqlite3", tmp_path / "copy.sqlite3")
    with pytest.raises(StoreError, match="has 2 names"):
        ServerStore.open(str(tmp_path / "copy.sqlite3"))
