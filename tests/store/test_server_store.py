"""The server log: stores, group-applied pushes, idempotent re-pushes, persistence, and
what the disk can do to it (full, read-only, written by an older version)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from trio_sync import StoreCorrupt, StoreError, StoreFull, StoreReadOnly
from trio_sync.protocol import Accept, Ahead, Event, Push
from trio_sync.store import DEFAULT_STORE, MEMORY, PushRequest, ServerStore


def ev(client: str, client_seq: int, **args: object) -> Event:
    return Event("x", {"c": client, "n": client_seq, **args}, client, client_seq)


def push(
    client: str, push_id: int, parent: int, *seqs: int, store: str = DEFAULT_STORE
) -> PushRequest:
    return PushRequest(store, client, Push(push_id, parent, tuple(ev(client, s) for s in seqs)))


def test_group_of_pushes_is_decided_in_order_in_one_transaction() -> None:
    store = ServerStore.open(MEMORY)
    decisions = store.apply_pushes(
        [
            push("A", 1, 0, 1, 2),
            push("B", 1, 0, 1),  # A got in first: B is behind
            push("A", 2, 0, 3),  # behind only its own events: appended
        ]
    )
    assert decisions == [
        Accept(new=(ev("A", 1).at(1), ev("A", 2).at(2)), seqs=(1, 2)),
        Ahead(2),
        Accept(new=(ev("A", 3).at(3),), seqs=(3,)),
    ]
    assert store.head == 3
    assert [e.key for e in store.read(0, 10)] == [("A", 1), ("A", 2), ("A", 3)]
    assert [e.seq for e in store.read(1, 1)] == [2]


def test_repush_is_acknowledged_without_appending() -> None:
    store = ServerStore.open(MEMORY)
    store.apply_pushes([push("A", 1, 0, 1)])
    store.apply_pushes([push("B", 1, 1, 1)])
    [decision] = store.apply_pushes([push("A", 2, 0, 1)])
    assert decision == Accept(new=(), seqs=(1,))
    assert store.head == 2


def test_stores_are_independent_logs_with_their_own_identity() -> None:
    store = ServerStore.open(MEMORY)
    todo = store.create_store("todo")
    assert todo.server_id != store.server_id and todo.head == 0
    assert store.create_store("todo") == todo  # creating twice is harmless
    decisions = store.apply_pushes(
        [push("A", 1, 0, 1, 2, store="todo"), push("A", 1, 0, 1), push("B", 1, 0, 1, store="todo")]
    )
    # Each store numbers its own log from 1; A's client_seqs are counted per store.
    assert decisions[0] == Accept(new=(ev("A", 1).at(1), ev("A", 2).at(2)), seqs=(1, 2))
    assert decisions[1] == Accept(new=(ev("A", 1).at(1),), seqs=(1,))
    assert decisions[2] == Ahead(2)
    assert store.store("todo").head == 2 and store.head == 1  # type: ignore[union-attr]
    assert [e.key for e in store.read(0, 10, store_id="todo")] == [("A", 1), ("A", 2)]
    assert [e.key for e in store.read(0, 10)] == [("A", 1)]
    assert [info.store_id for info in store.stores()] == ["default", "todo"]
    assert store.store("nope") is None


@pytest.mark.parametrize("bad", ["", ".hidden", "-x", "a/b", "a b", "x" * 65, "é"])
def test_a_store_id_must_be_a_safe_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid store id"):
        ServerStore.open(MEMORY).create_store(bad)


def test_log_stores_and_identity_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = ServerStore.open(path)
    server_id = store.server_id
    todo_id = store.create_store("todo").server_id
    store.apply_pushes([push("A", 1, 0, 1, 2), push("A", 1, 0, 1, store="todo")])
    store.close()
    store = ServerStore.open(path)
    assert store.server_id == server_id and store.head == 2
    assert store.store("todo") is not None
    assert store.store("todo").server_id == todo_id and store.store("todo").head == 1  # type: ignore[union-attr]
    assert store.read(0, 10) == [ev("A", 1).at(1), ev("A", 2).at(2)]
    store.close()


def test_each_database_has_its_own_identity() -> None:
    one, two = ServerStore.open(MEMORY), ServerStore.open(MEMORY)
    assert one.server_id != two.server_id
    one.close()
    two.close()


def test_a_version_1_log_becomes_the_default_store_with_its_identity(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE events (seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL,
            client_seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
            UNIQUE (client_id, client_seq));
        INSERT INTO meta VALUES ('server_id', 'old-identity');
        INSERT INTO events VALUES (1, 'A', 1, 'x', '{"i":1}'), (2, 'B', 1, 'x', '{"i":2}');
        CREATE TABLE store_kind (kind TEXT NOT NULL);
        INSERT INTO store_kind VALUES ('server');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = ServerStore.open(str(path))
    assert store.server_id == "old-identity" and store.head == 2
    assert [(e.seq, e.key, e.args) for e in store.read(0, 10)] == [
        (1, ("A", 1), {"i": 1}),
        (2, ("B", 1), {"i": 2}),
    ]
    [decision] = store.apply_pushes([push("A", 9, 2, 2)])
    assert isinstance(decision, Accept) and decision.seqs == (3,)
    store.close()


def test_a_page_read_is_bounded_in_bytes_but_always_makes_progress() -> None:
    store = ServerStore.open(MEMORY)
    big = "p" * 10_000
    store.apply_pushes(
        [
            PushRequest(
                DEFAULT_STORE, "A", Push(1, 0, tuple(ev("A", i, pad=big) for i in range(1, 6)))
            )
        ]
    )
    assert len(store.read(0, 100, max_bytes=25_000)) == 2
    assert len(store.read(0, 100, max_bytes=1)) == 1  # one event larger than the budget
    assert len(store.read(0, 100)) == 5


def test_a_full_disk_is_a_distinct_error_and_writes_nothing(tmp_path: Path) -> None:
    store = ServerStore.open(str(tmp_path / "s.sqlite3"))
    store.apply_pushes([push("A", 1, 0, 1)])
    # What was tried: the database may not grow (SQLite reports SQLITE_FULL, as for a disk).
    store._db._conn.execute("PRAGMA max_page_count = 1")
    big = tuple(ev("A", i, pad="x" * 50_000) for i in range(2, 12))
    with pytest.raises(StoreFull, match="the disk is full"):
        store.apply_pushes([PushRequest(DEFAULT_STORE, "A", Push(2, 1, big))])
    assert store.head == 1 and len(store.read(0, 100)) == 1
    store._db._conn.execute("PRAGMA max_page_count = 1073741823")
    [decision] = store.apply_pushes([PushRequest(DEFAULT_STORE, "A", Push(3, 1, big))])
    assert isinstance(decision, Accept) and store.head == 11
    store.close()


def test_a_read_only_database_is_found_out_before_the_first_push(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    ServerStore.open(path).close()
    store = ServerStore.open(path)
    # What was tried: the file opened read-only (as when its permissions forbid writing).
    store._db._conn.close()
    store._db._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(StoreReadOnly, match="cannot be written"):
        store.check_writable()
    store.close()


def test_a_row_an_older_version_could_write_is_reported_not_crashed_on(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = ServerStore.open(path)
    store.apply_pushes([push("A", 1, 0, 1)])
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("""UPDATE log SET args = '{"x": NaN}'""")
    conn.close()
    store = ServerStore.open(path)
    with pytest.raises(StoreCorrupt, match=r"'A'/1 \(seq 1\) cannot be read back"):
        store.read(0, 10)
    store.close()


def test_a_database_deleted_while_open_refuses_to_acknowledge(tmp_path: Path) -> None:
    # Found by the hostile probe: pushes were acknowledged into the deleted file and lost
    # at the next start, and /healthz said ok.
    path = tmp_path / "s.sqlite3"
    store = ServerStore.open(str(path))
    store.apply_pushes([push("A", 1, 0, 1)])
    for leftover in tmp_path.glob("s.sqlite3*"):
        if not leftover.name.endswith(".lock"):
            leftover.unlink()
    with pytest.raises(StoreError, match="deleted or replaced while in use"):
        store.apply_pushes([push("A", 2, 1, 2)])
    with pytest.raises(StoreError, match="deleted or replaced"):
        store.check_writable()
    store.close()


def test_a_store_created_by_many_connections_at_once_gets_one_identity(tmp_path: Path) -> None:
    # What was tried: several connections to a server with --create-stores asking for the
    # same new store at the same moment, each from its own worker thread (a churn of
    # clients found "UNIQUE constraint failed: stores.store_id" refused some of them).
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    threads = 6
    for attempt in range(30):
        store_id = f"new-{attempt}"
        barrier = threading.Barrier(threads)
        results: list[object] = []

        def create(
            store_id: str = store_id,
            barrier: threading.Barrier = barrier,
            results: list[object] = results,
        ) -> None:
            barrier.wait()
            try:
                results.append(store.create_store(store_id))
            except Exception as exc:  # the failure is what is checked
                results.append(exc)

        workers = [threading.Thread(target=create) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(set(map(repr, results))) == 1, results
        assert results[0] == store.store(store_id)
    store.close()
