"""The client store: durable commits, reload, identity, and refusing what it cannot use."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_sync import (
    StoreCorrupt,
    StoreError,
    StoreInUse,
    StoreMismatch,
    StoreVersionError,
)
from trio_sync.protocol import Event, SyncState
from trio_sync.store import ClientStore, ServerStore, _client_store, inspect_store
from trio_sync.store._client_store import MIGRATIONS


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    store = ClientStore.open(path, "A")
    state = SyncState("A")
    events = [state.commit("x", {"i": i}) for i in range(3)]
    for event in events:
        store.append_pending(event)
    foreign = Event("y", {}, "B", 1, 1)
    store.apply_upstream([foreign, events[0].at(2)], [events[0].at(2)])
    store.record_ack(2)
    store.record_server_id("srv")
    store.close()

    store = ClientStore.open(path)  # the id comes from the store
    loaded = store.load_state()
    assert store.client_id == "A" and store.server_id == "srv"
    assert loaded.upstream_head == 2 and loaded.acked_through == 2
    assert loaded.pending == tuple(events[1:]) and loaded.next_client_seq == 4
    assert store.confirmed_events() == [foreign, events[0].at(2)]
    assert store.confirmed_events(after=1) == [events[0].at(2)]
    store.close()


def test_new_store_gets_a_random_client_id(tmp_path: Path) -> None:
    first = ClientStore.open(str(tmp_path / "1.sqlite3"))
    second = ClientStore.open(str(tmp_path / "2.sqlite3"))
    assert first.client_id != second.client_id and len(first.client_id) == 32
    first.close()
    second.close()


def test_store_of_another_client_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    ClientStore.open(path, "A").close()
    with pytest.raises(StoreMismatch, match="belongs to client 'A', not 'B'"):
        ClientStore.open(path, "B")


def test_second_handle_in_this_process_gets_store_in_use(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    store = ClientStore.open(path, "A")
    with pytest.raises(StoreInUse, match="in use"):
        ClientStore.open(path, "A")
    store.close()
    ClientStore.open(path, "A").close()  # released on close


def test_second_process_gets_store_in_use_and_corrupts_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    store = ClientStore.open(path, "A")
    state = SyncState("A")
    store.append_pending(state.commit("x", {}))
    code = textwrap.dedent(f"""
        from trio_sync import StoreInUse
        from trio_sync.store import ClientStore
        try:
            ClientStore.open({path!r}, "A")
        except StoreInUse as exc:
            print("refused:", exc)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "refused: store" in result.stdout and "in use" in result.stdout
    store.append_pending(state.commit("x", {}))
    assert [e.client_seq for e in store.load_state().pending] == [1, 2]
    store.close()


def test_a_file_that_is_not_a_database_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorrupt, match="damaged or not a trio_sync store"):
        ClientStore.open(str(path), "A")
    assert path.read_bytes() == b"this is not sqlite" * 100  # left as it was


def test_another_sqlite_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(StoreCorrupt, match="not a trio_sync store"):
        ClientStore.open(str(path), "A")


def test_a_server_store_is_not_a_client_store(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    ServerStore.open(path).close()
    with pytest.raises(StoreMismatch, match="is a trio_sync server store, not a client store"):
        ClientStore.open(path, "A")


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    ClientStore.open(path, "A").close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreVersionError, match="schema version 99"):
        ClientStore.open(path, "A")


def test_store_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    ClientStore.open(path, "A").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_failed_write_records_nothing(tmp_path: Path) -> None:
    # What was tried: the same client_seq written twice (as a bug would). The store says
    # so, and the first commit is still there, alone.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    event = SyncState("A").commit("x", {})
    store.append_pending(event)
    with pytest.raises(StoreError):
        store.append_pending(event)
    assert store.load_state().pending == (event,)
    store.close()


KILL_SCRIPT = """
import sys
from trio_sync.protocol import SyncState
from trio_sync.store import ClientStore
store = ClientStore.open(sys.argv[1], "A")
state = store.load_state()
for i in range(100000):
    event = state.commit("n", {"i": i})
    store.append_pending(event)
    print(event.client_seq, flush=True)   # only after the commit returned
"""


def test_every_commit_that_returned_survives_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, path], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acknowledged = 0
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rest = proc.stdout.read().split()
    proc.stdout.close()
    acknowledged = int(rest[-1]) if rest else acknowledged

    store = ClientStore.open(path, "A")
    state = store.load_state()
    assert state.next_client_seq - 1 >= acknowledged
    assert [e.args["i"] for e in state.pending] == list(range(state.next_client_seq - 1))
    store.close()


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """No file can be created in ``folder`` meanwhile, as on read-only media: the
    immutable attribute as root (which permissions do not stop), else permissions."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        made, undo = True, []
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            made = False
        if not made:
            pytest.skip(f"cannot make {folder} unwritable here")
        yield
    finally:
        if undo:
            subprocess.run(undo, check=False)
        else:
            folder.chmod(0o755)


def store_with_one_pending(path: Path) -> ClientStore:
    store = ClientStore.open(str(path), "A")
    store.append_pending(SyncState("A").commit("x", {"i": 1}))
    return store


def test_inspect_reads_a_cleanly_closed_store_in_a_folder_it_cannot_write(
    tmp_path: Path,
) -> None:
    # What was tried: a store closed cleanly (no -wal, no -shm) in a folder where nothing
    # can be created, as on read-only media. SQLite's read-only mode wants to create the
    # -shm file: it used to fail, and the status command called it "not a client store".
    folder = tmp_path / "read-only?#1"  # and a name a URI would misread
    folder.mkdir()
    store_with_one_pending(folder / "c.sqlite3").close()
    with unwritable(folder):
        summary = inspect_store(str(folder / "c.sqlite3"))
    assert (summary.client_id, summary.pending, summary.next_client_seq) == ("A", 1, 2)
    assert sorted(p.name for p in folder.iterdir()) == ["c.sqlite3", "c.sqlite3.lock"]


def test_inspect_leaves_a_cleanly_closed_store_as_it_was(tmp_path: Path) -> None:
    # What was tried (a review's finding): trio-sync status on a store closed cleanly, in
    # a folder it can write. SQLite's read-only mode made a -wal and a -shm beside it
    # that stayed there, though inspecting "changes nothing".
    store_with_one_pending(tmp_path / "c.sqlite3").close()
    before = sorted(p.name for p in tmp_path.iterdir())
    summary = inspect_store(str(tmp_path / "c.sqlite3"))
    assert (summary.client_id, summary.pending) == ("A", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("meanwhile", ["stale", "torn"])
def test_inspect_reads_again_when_an_application_wrote_while_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    # What was tried (a second review's finding): the application opens the store,
    # commits and closes (a checkpoint writes the database file) while trio-sync status
    # reads it from the file alone. That read saw a mix of old and new pages: "database
    # disk image is malformed" (a healthy store called damaged), or stale facts. Here the
    # read from the file alone returns its stale facts, or fails as a torn one does; the
    # file changed meanwhile, so the store is read again, through its log.
    path = tmp_path / "c.sqlite3"
    store_with_one_pending(path).close()
    summary = _client_store._summary

    def racing(where: str, *, immutable: bool) -> Any:
        if not immutable:
            return summary(where, immutable=False)
        facts = summary(where, immutable=True)
        store = ClientStore.open(where, "A")
        state = store.load_state()
        for i in range(2, 7):
            event = state.commit("x", {"i": i})
            store.append_pending(event)
        store.checkpoint()
        store.close()
        if meanwhile == "torn":
            raise sqlite3.DatabaseError("database disk image is malformed")
        return facts

    monkeypatch.setattr(_client_store, "_summary", racing)
    assert inspect_store(str(path)).pending == 6


def test_inspect_reads_what_the_write_ahead_log_of_a_store_in_use_holds(
    tmp_path: Path,
) -> None:
    # What was tried: inspecting a store while it is open, its last commit still only in
    # its write-ahead log: the log is read too (not the database file alone).
    store = store_with_one_pending(tmp_path / "c.sqlite3")
    try:
        assert (tmp_path / "c.sqlite3-wal").stat().st_size > 0
        assert inspect_store(str(tmp_path / "c.sqlite3")).pending == 1
    finally:
        store.close()


def test_inspect_explains_a_write_ahead_log_it_cannot_read(tmp_path: Path) -> None:
    # What was tried: a copy of a store taken while it was open (its -wal holds the
    # commit, no -shm came along) in a folder where nothing can be created. Reading the
    # database file alone would show stale facts: it says why it cannot read instead.
    live = tmp_path / "live"
    live.mkdir()
    store = store_with_one_pending(live / "c.sqlite3")
    copy = tmp_path / "copy"
    copy.mkdir()
    try:
        for name in ("c.sqlite3", "c.sqlite3-wal"):
            shutil.copyfile(live / name, copy / name)
    finally:
        store.close()
    with unwritable(copy), pytest.raises(StoreError, match="has a write-ahead log") as caught:
        inspect_store(str(copy / "c.sqlite3"))
    assert not isinstance(caught.value, StoreCorrupt)
    assert "copy the store's files to a writable folder" in str(caught.value)


def test_a_symbolic_link_to_a_store_in_use_finds_it_in_use(tmp_path: Path) -> None:
    # What was tried: a second open through a symbolic link while the store is open. The
    # lock was taken beside the name given, so both opened, shared one client id, and the
    # second commit failed on a UNIQUE constraint.
    store = store_with_one_pending(tmp_path / "c.sqlite3")
    (tmp_path / "link.sqlite3").symlink_to(tmp_path / "c.sqlite3")
    try:
        with pytest.raises(StoreInUse):
            ClientStore.open(str(tmp_path / "link.sqlite3"))
    finally:
        store.close()
    again = ClientStore.open(str(tmp_path / "link.sqlite3"))  # free once closed
    assert again.load_state().client_id == "A"
    again.close()


def test_a_read_racing_the_close_says_the_store_is_closed(tmp_path: Path) -> None:
    # Tried (a review saw "AttributeError: 'NoneType' object has no attribute 'execute'"
    # once): a read looks at the reader connection, then the store closes before the read
    # takes its lock. It read from the connection the close had just dropped.
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    db = store._db
    assert db._reader is not None  # a file store reads on a connection of its own
    read_lock = db._read_lock

    class ClosesFirst:
        """The read lock, taken by a read only after the close ran."""

        def __enter__(self) -> None:
            db._read_lock = read_lock
            store.close()
            read_lock.acquire()

        def __exit__(self, *exc_info: object) -> None:
            read_lock.release()

    db._read_lock = ClosesFirst()  # type: ignore[assignment]
    with pytest.raises(StoreError, match="is closed"):
        store.load_state()
