"""Layer 3, start-up recovery: a damaged client store is moved aside and its pending
events salvaged; a server log that cannot be trusted is refused, unchanged."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_sync
from trio_sync import StoreCorrupt, StoreDamaged, StoreError
from trio_sync.protocol import Event
from trio_sync.store import ClientStore, ServerStore, open_client_store
from trio_sync.store._lineage import read_jsonl

from ..conftest import FAST, WAIT


def make_damaged_store(path: Path, *, pending: int, confirmed: int = 3000) -> None:
    """A client store with a long confirmed log and some pending events, then 8 KiB of
    garbage written over the middle of the file (inside the confirmed log's pages)."""
    store = ClientStore.open(str(path), "A")
    store.apply_upstream(
        [
            Event(seq=i, client_id="B", client_seq=i, name="theirs", args={"pad": "x" * 200})
            for i in range(1, confirmed + 1)
        ],
        [],
    )
    for i in range(1, pending + 1):
        store.append_pending(
            Event(seq=None, client_id="A", client_seq=i, name="mine", args={"i": i})
        )
    store.checkpoint()
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 2)
        file.write(bytes(range(256)) * 32)


def test_damaged_store_is_moved_aside_and_pending_events_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    make_damaged_store(path, pending=5)
    damaged = hashlib.sha256(path.read_bytes()).hexdigest()
    store, recovery = open_client_store(str(path), now=1_700_000_000.0)
    try:
        assert recovery is not None
        assert recovery.moved_to == f"{path}.corrupt.20231114T221320Z"
        assert recovery.salvaged == 5 and "damaged" in recovery.reason
        # The damaged file is kept as it was, for a person to look at.
        assert hashlib.sha256(Path(recovery.moved_to).read_bytes()).hexdigest() == damaged
        assert store.client_id == "A"
        state = store.load_state()
        assert state.upstream_head == 0  # the confirmed log comes back from the server
        assert [(e.client_seq, e.args["i"]) for e in state.pending] == [(i, i) for i in range(1, 6)]
    finally:
        store.close()


def test_a_healthy_store_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ClientStore.open(str(path), "A").close()
    store, recovery = open_client_store(str(path))
    store.close()
    assert recovery is None
    assert not any(".corrupt." in p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "contents",
    [b"my notes " * 1000, b"my notes" * 512, random.Random(7).randbytes(16384)],
    ids=["9000-byte-text", "4096-byte-text", "16384-random-bytes"],
)
def test_a_file_that_is_not_a_store_is_refused_not_moved(tmp_path: Path, contents: bytes) -> None:
    # Tried: the path points at someone's file, opened twice. It must not be renamed,
    # even when its size is whole database pages, as a damaged store's is: the lock file
    # the first attempt leaves beside it does not make it a store (a review found the
    # second and third moved aside and replaced on the first attempt).
    path = tmp_path / "notes.txt"
    path.write_bytes(contents)
    for _attempt in range(2):
        with pytest.raises(StoreCorrupt) as refused:
            open_client_store(str(path))
        assert not isinstance(refused.value, StoreDamaged)
    assert path.read_bytes() == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "notes.txt.lock"]


def _smash_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(bytes(range(256)) * 4)  # SQLite's header: unreadable, size unchanged


def test_a_lock_left_by_a_deleted_store_does_not_make_another_file_a_store(
    tmp_path: Path,
) -> None:
    # Tried (a second review's finding): a store opened, then deleted (its lock file is
    # left), and someone's notes written at its path, in whole pages. The lock's mark
    # named the path only, so the notes were moved aside as a damaged store.
    path = tmp_path / "c.sqlite3"
    ClientStore.open(str(path), "A").close()
    path.unlink()
    path.write_bytes(b"my notes" * 512)
    with pytest.raises(StoreCorrupt) as refused:
        open_client_store(str(path))
    assert not isinstance(refused.value, StoreDamaged)
    assert path.read_bytes() == b"my notes" * 512


def test_a_damaged_store_behind_a_symbolic_link_is_rebuilt_where_it_was(
    tmp_path: Path,
) -> None:
    # Tried (a second review's finding): the store's path is a symbolic link to the file,
    # whose header is then damaged. The link itself was renamed .corrupt.* and the new
    # store made beside it as a plain file, the damaged one left where it was.
    (tmp_path / "real").mkdir()
    link = tmp_path / "c.sqlite3"
    link.symlink_to(tmp_path / "real" / "r.sqlite3")
    ClientStore.open(str(link), "A").close()
    _smash_header(tmp_path / "real" / "r.sqlite3")
    store, recovery = open_client_store(str(link), now=1_700_000_000.0)
    store.close()
    assert recovery is not None
    assert recovery.moved_to == str(tmp_path / "real" / "r.sqlite3.corrupt.20231114T221320Z")
    assert link.is_symlink() and link.resolve() == tmp_path / "real" / "r.sqlite3"
    ClientStore.open(str(link)).close()  # the new store, where the link points


def test_a_lock_file_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    # Tried (a second review's finding): the lock file's mark cannot be written (a full
    # disk; here the lock is /dev/full). The store opened, and its close raised the
    # write's OSError again (Python's buffer kept the mark).
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    path = tmp_path / "c.sqlite3"
    Path(str(path) + ".lock").symlink_to("/dev/full")
    store = ClientStore.open(str(path), "A")
    store.close()


async def test_client_recovers_a_damaged_store_and_resyncs(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite3"
    async with trio_sync.open_client(server.url, str(path), client_id="A", timings=FAST) as a:
        await a.commit("synced", {"i": 0})
        with trio.fail_after(WAIT):
            await a.wait_synced()
    # Offline commits, then the disk damages the file.
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        nowhere = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    async with trio_sync.open_client(nowhere, str(path), timings=FAST) as a:
        for i in range(1, 4):
            await a.commit("offline", {"i": i})
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE padding (x)")
    conn.executemany("INSERT INTO padding VALUES (?)", [("p" * 500,) for _ in range(2000)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size - 100_000)
        file.write(bytes(range(256)) * 64)

    async with trio_sync.open_client(server.url, str(path), timings=FAST) as a:
        [recovery] = [n for n in a.recent_events() if n.kind == "recovery"]
        assert recovery["what"] == "damaged-store" and recovery["salvaged"] == 3
        assert await trio.Path(str(recovery["moved_to"])).exists()
        with trio.fail_after(WAIT):
            await a.wait_synced()
        assert [(e.name, e.args["i"]) for e in a.confirmed_events()] == [
            ("synced", 0),
            ("offline", 1),
            ("offline", 2),
            ("offline", 3),
        ]


def test_server_refuses_a_log_with_a_gap_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "server.sqlite3"
    store = ServerStore.open(str(path))
    store.close()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO log (store_id, seq, client_id, client_seq, name, args) VALUES "
        "('default', ?, 'A', ?, 'x', '{}')",
        [(1, 1), (2, 2), (4, 3)],  # position 3 is missing
    )
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreDamaged, match=r"holds 3 events at positions 1\.\.4.*backup"):
        ServerStore.open(str(path))
    assert path.read_bytes() == before


def test_server_refuses_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "server.sqlite3"
    store = ServerStore.open(str(path))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE padding (x)")
    conn.executemany("INSERT INTO padding VALUES (?)", [("p" * 500,) for _ in range(2000)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with path.open("r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(bytes(range(256)) * 32)
    before = path.read_bytes()
    with pytest.raises(StoreDamaged):
        ServerStore.open(str(path))
    assert path.read_bytes() == before
    assert not any(".corrupt." in p.name for p in tmp_path.iterdir())


def test_a_store_whose_id_is_unreadable_gets_a_new_one_and_numbers_from_1(
    tmp_path: Path,
) -> None:
    # Tried: the damage took the identity with it. The salvaged events then belong to a
    # new id the server has never seen: numbered from 1, or the server would refuse a gap.
    path = tmp_path / "c.sqlite3"
    # A store with pending events at client_seq 101.. and no client_id, then damaged.
    store = ClientStore.open(str(path), "A")
    for i in range(101, 104):
        store.append_pending(Event(seq=None, client_id="A", client_seq=i, name="e", args={}))
    store._db.write(lambda c: c.execute("DELETE FROM meta WHERE key = 'client_id'"))
    store.apply_upstream(
        [
            Event(seq=i, client_id="B", client_seq=i, name="x", args={"p": "y" * 200})
            for i in range(1, 3001)
        ],
        [],
    )
    store.checkpoint()
    store.close()
    with path.open("r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(bytes(range(256)) * 32)
    recovered, recovery = open_client_store(str(path))
    try:
        assert recovery is not None and recovery.salvaged == 3
        assert recovered.client_id != "A"
        assert [e.client_seq for e in recovered.load_state().pending] == [1, 2, 3]
    finally:
        recovered.close()


def test_a_store_with_a_damaged_header_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    make_damaged_store(path, pending=2, confirmed=10)
    with path.open("r+b") as file:
        file.write(b"\0" * 100)  # the SQLite header gone: "file is not a database"
    store, recovery = open_client_store(str(path), "A")
    store.close()
    assert recovery is not None and ".corrupt." in recovery.moved_to


def test_two_damaged_stores_in_one_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    moved = []
    for _ in range(2):
        make_damaged_store(path, pending=1)
        store, recovery = open_client_store(str(path), now=1_700_000_000.0)
        store.close()
        assert recovery is not None
        moved.append(recovery.moved_to)
        path.unlink()
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
    assert moved[0] != moved[1] and all(Path(m).exists() for m in moved)


def test_two_backups_in_one_second_are_both_kept(tmp_path: Path) -> None:
    # Tried: reset(keep_pending=False) twice in the same second (the stamp has seconds).
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), "A")
    saved = []
    try:
        for batch in (1, 2):
            store.append_pending(
                Event(seq=None, client_id="A", client_seq=1, name="e", args={"batch": batch})
            )
            path, kept = store.reset_lineage(keep_pending=False, first_client_seq=1, now=1e9)
            assert kept == 0 and path is not None
            saved.append(path)
    finally:
        store.close()
    assert saved[0] != saved[1]
    assert [read_jsonl(p)[0].args for p in saved] == [{"batch": 1}, {"batch": 2}]


def _open_after(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        store, recovery = open_client_store(path)
    except StoreError as exc:
        results.put(type(exc).__name__)
        return
    try:
        time.sleep(0.2)  # held open while the other process tries
        store._db.check_file()  # still the file at the path: not moved aside under us
        results.put("recovered" if recovery is not None else "opened")
    finally:
        store.close()


def test_two_processes_opening_one_damaged_store_recover_it_once(tmp_path: Path) -> None:
    # Tried (a third review's finding): two processes open the same store, its header
    # damaged, at the same moment. Both found it damaged and both moved it aside: the
    # second moved the first's new store (in use), in about 1 trial of 4. Recoveries of
    # a path now take turns and look again first, so the store is moved aside once and a
    # store recovered stays where it is (checked by the worker that recovered it). A
    # process that reads the path while the other moves it can still fail to open it,
    # with an error (about 1 trial in 30).
    context = multiprocessing.get_context("fork")
    for trial in range(10):
        folder = tmp_path / str(trial)
        folder.mkdir()
        path = folder / "c.sqlite3"
        ClientStore.open(str(path), "A").close()
        _smash_header(path)
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_open_after, args=(str(path), barrier, results))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        outcomes = sorted(results.get(timeout=60) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
        assert outcomes.count("recovered") <= 1, outcomes
        moved = [
            p for p in os.listdir(folder) if ".corrupt." in p and p[-4:] not in ("-wal", "-shm")
        ]
        assert len(moved) == 1, (moved, outcomes)
