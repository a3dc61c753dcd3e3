"""Layer 3, start-up recovery: a damaged client store is moved aside and its pending
events salvaged; a server log that cannot be trusted is refused, unchanged."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
import trio

import trio_sync
from trio_sync import StoreCorrupt, StoreDamaged
from trio_sync.protocol import Event
from trio_sync.store import ClientStore, ServerStore, open_client_store

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


def test_a_file_that_is_not_a_store_is_refused_not_moved(tmp_path: Path) -> None:
    # Tried: the path points at someone's text file. It must not be renamed.
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my notes " * 1000)
    with pytest.raises(StoreCorrupt) as refused:
        open_client_store(str(path))
    assert not isinstance(refused.value, StoreDamaged)
    assert path.read_bytes() == b"my notes " * 1000


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
