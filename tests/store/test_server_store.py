"""The server log: group-applied pushes, idempotent re-pushes, persistence."""

from __future__ import annotations

from pathlib import Path

from trio_sync.protocol import Accept, Ahead, Event, Push
from trio_sync.store import MEMORY, ServerStore


def ev(client: str, client_seq: int) -> Event:
    return Event("x", {"c": client, "n": client_seq}, client, client_seq)


def test_group_of_pushes_is_decided_in_order_in_one_transaction() -> None:
    store = ServerStore.open(MEMORY)
    decisions = store.apply_pushes(
        [
            ("A", Push(1, 0, (ev("A", 1), ev("A", 2)))),
            ("B", Push(1, 0, (ev("B", 1),))),  # A got in first: B is behind
            ("A", Push(2, 0, (ev("A", 3),))),  # behind only its own events: appended
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
    store.apply_pushes([("A", Push(1, 0, (ev("A", 1),)))])
    store.apply_pushes([("B", Push(1, 1, (ev("B", 1),)))])
    [decision] = store.apply_pushes([("A", Push(2, 0, (ev("A", 1),)))])
    assert decision == Accept(new=(), seqs=(1,))
    assert store.head == 2


def test_log_and_identity_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = ServerStore.open(path)
    server_id = store.server_id
    store.apply_pushes([("A", Push(1, 0, (ev("A", 1), ev("A", 2))))])
    store.close()
    store = ServerStore.open(path)
    assert store.server_id == server_id and store.head == 2
    assert store.read(0, 10) == [ev("A", 1).at(1), ev("A", 2).at(2)]
    store.close()


def test_each_database_has_its_own_identity(tmp_path: Path) -> None:
    one, two = ServerStore.open(MEMORY), ServerStore.open(MEMORY)
    assert one.server_id != two.server_id
    one.close()
    two.close()
