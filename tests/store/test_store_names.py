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

from trio_sync import StoreError, StoreHasOtherNames, StoreInUse
from trio_sync.protocol import SyncState
from trio_sync.store import ClientStore, ServerStore, _names, inspect_store, open_client_store

from .test_startup_recovery import make_damaged_store


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
    assert isinstance(caught.value, StoreHasOtherNames)
    assert not isinstance(caught.value, StoreInUse)
    assert caught.value.others == (str(tmp_path / "c.sqlite3"),)
    assert "has 2 names (hard links" in message
    assert f"in use by the name {str(tmp_path / 'c.sqlite3')!r}: keep that name" in message
    assert "copy it while it is closed" in message
    assert not (tmp_path / "link.sqlite3.lock").exists()  # refused before its lock
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
    with pytest.raises(StoreHasOtherNames) as caught:
        ClientStore.open(str(tmp_path / "renamed.sqlite3"), "A")
    assert (
        f"{str(path)!r} has a write-ahead log holding commits the other names do not see: "
        f"keep {str(path)!r} and remove every other name (the one you opened included)"
    ) in str(caught.value)
    # The way out the message gives: keep the name with the log, remove the other.
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
        assert "no name has a write-ahead log: keep any one name" in str(caught.value)
    os.unlink(tmp_path / "backup.sqlite3")
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    assert store.load_state().client_id == "A"
    store.close()


def test_a_link_in_another_folder_is_refused_without_naming_it(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "elsewhere" / "c.sqlite3")
    with pytest.raises(StoreHasOtherNames) as caught:
        ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    assert "other names beside it: none; 1 other name(s) in other folders" in str(caught.value)
    assert "find / -xdev -samefile" in str(caught.value)


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


def test_a_directory_is_not_a_store_with_other_names(tmp_path: Path) -> None:
    # Tried (a review's finding): a directory given as the store of a client and of a
    # server. Its link count (2 and up: its entries) read as other names, and the advice
    # was to find and remove them.
    folder = tmp_path / "d.sqlite3"
    folder.mkdir()
    for open_store in (ClientStore.open, ServerStore.open, open_client_store):
        with pytest.raises(StoreError) as refused:
            open_store(str(folder))
        assert not isinstance(refused.value, StoreHasOtherNames)
        assert str(refused.value) == (
            f"store {str(folder)!r} is a directory: give the path of a store file"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.sqlite3"]


def test_an_empty_log_beside_another_name_is_not_taken_for_the_commits(tmp_path: Path) -> None:
    # What was tried: reading the link with a tool made an empty link.sqlite3-wal while
    # the commits are in c.sqlite3-wal (a process killed with them there: simulated by
    # leaving the store open, its log not checkpointed). The advice named the link.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    store.append_pending(SyncState("A").commit("x", {"i": 1}))
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    (tmp_path / "link.sqlite3-wal").write_bytes(b"")
    store._db._lock_file.close()  # type: ignore[union-attr]  # as if its process died
    try:
        with pytest.raises(StoreHasOtherNames) as caught:
            ClientStore.open(str(tmp_path / "link.sqlite3"), "A")
        c = str(tmp_path / "c.sqlite3")
        assert f"keep {c!r} and remove every other name (the one you opened included)" in str(
            caught.value
        )
    finally:
        store._db._lock_file = None
        store.close()


def test_several_names_with_a_log_are_left_alone(tmp_path: Path) -> None:
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    for name in ("c.sqlite3-wal", "link.sqlite3-wal"):
        (tmp_path / name).write_bytes(b"x" * 100)
    with pytest.raises(StoreHasOtherNames, match="remove nothing yet; copy every one"):
        ClientStore.open(str(tmp_path / "c.sqlite3"), "A")


def test_three_names_odd_ones_are_quoted_and_the_one_elsewhere_counted(tmp_path: Path) -> None:
    (tmp_path / "far").mkdir()
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    odd = tmp_path / "a, b\nc.sqlite3"
    os.link(tmp_path / "c.sqlite3", odd)
    os.link(tmp_path / "c.sqlite3", tmp_path / "far" / "x.sqlite3")
    with pytest.raises(StoreHasOtherNames) as caught:
        ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    message = str(caught.value)
    assert "has 3 names" in message
    assert f"other names beside it: {str(odd)!r};" in message
    assert "1 other name(s) in other folders" in message
    assert caught.value.others == (str(odd),)


def test_a_folder_that_cannot_be_listed_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (As root, permissions do not stop a listing: the listing itself is made to fail.)
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")

    def refuse(folder: str) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_names.os, "scandir", refuse)
    with pytest.raises(StoreHasOtherNames) as caught:
        ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    assert "its folder could not be listed: Permission denied" in str(caught.value)


def test_a_name_removed_while_the_folder_is_listed_is_not_held_against_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    listing = _names._names_beside

    def listed_then_removed(real: str, info: os.stat_result) -> tuple[list[str], str | None]:
        found = listing(real, info)
        os.unlink(tmp_path / "link.sqlite3")
        return found

    monkeypatch.setattr(_names, "_names_beside", listed_then_removed)
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    assert store.load_state().client_id == "A"
    store.close()


def test_the_status_reader_refuses_a_store_with_two_names_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # What was tried: `trio-sync status` on a link to a store whose commits are in the
    # first name's log. It read a fresh store, and left a -wal and -shm beside the link.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    store.append_pending(SyncState("A").commit("x", {"i": 1}))
    os.link(tmp_path / "c.sqlite3", tmp_path / "link.sqlite3")
    try:
        with pytest.raises(StoreHasOtherNames, match="in use by the name"):
            inspect_store(str(tmp_path / "link.sqlite3"))
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.sqlite3",
        "c.sqlite3.lock",
        "link.sqlite3",
    ]


def test_a_recovery_killed_between_its_link_and_its_unlink_is_finished(tmp_path: Path) -> None:
    # What was tried: start-up recovery gives a damaged store its `.corrupt.` name, then
    # removes the first; killed between the two, every later start was refused for two
    # names. It is finished now, and the pending events still salvaged.
    path = tmp_path / "c.sqlite3"
    make_damaged_store(path, pending=5)
    moved = tmp_path / "c.sqlite3.corrupt.20231114T221320Z"
    os.link(path, moved)  # where the killed recovery stopped
    store, recovery = open_client_store(str(path), now=1_800_000_000.0)
    try:
        assert recovery is not None
        assert recovery.moved_to == str(moved) and "interrupted" in recovery.reason
        assert recovery.salvaged == 5
        assert [e.client_seq for e in store.load_state().pending] == [1, 2, 3, 4, 5]
    finally:
        store.close()
    assert moved.stat().st_nlink == 1
    assert not any(".corrupt.2027" in p.name for p in tmp_path.iterdir())  # no second move


def test_a_link_that_only_looks_like_a_moved_store_is_not_taken_for_one(tmp_path: Path) -> None:
    ClientStore.open(str(tmp_path / "c.sqlite3"), "A").close()
    os.link(tmp_path / "c.sqlite3", tmp_path / "backup.corrupt.1")
    with pytest.raises(StoreHasOtherNames):
        open_client_store(str(tmp_path / "c.sqlite3"))
    assert (tmp_path / "c.sqlite3").stat().st_nlink == 2  # nothing moved
