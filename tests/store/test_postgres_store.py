"""The PostgreSQL server log against a real PostgreSQL: the promises of the SQLite one
(tests/store/test_server_store.py), and what only a shared log has to keep: two nodes
appending to one store at the same moment never give two events one position nor leave
a gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sync import StoreError, StoreVersionError
from trio_sync.protocol import Accept, Ahead, Push
from trio_sync.store import DEFAULT_STORE, PostgresStore, PushRequest
from trio_sync.store._pg_schema import SCHEMA_VERSION
from trio_sync.testing._pg_cluster import PostgresCluster

from .test_server_store import ev, push


@pytest.fixture
def store(pg_log: str) -> Iterator[PostgresStore]:
    opened = PostgresStore.open(pg_log)
    yield opened
    opened.close()


def test_group_of_pushes_is_decided_in_order_in_one_transaction(store: PostgresStore) -> None:
    decisions = store.apply_pushes([push("A", 1, 0, 1, 2), push("B", 1, 0, 1), push("A", 2, 0, 3)])
    assert decisions == [
        Accept(new=(ev("A", 1).at(1), ev("A", 2).at(2)), seqs=(1, 2)),
        Ahead(2),
        Accept(new=(ev("A", 3).at(3),), seqs=(3,)),
    ]
    assert store.head == 3
    assert [e.key for e in store.read(0, 10)] == [("A", 1), ("A", 2), ("A", 3)]
    assert [e.seq for e in store.read(1, 1)] == [2]
    assert store.last_client_seq("A") == 3 and store.last_client_seq("Z") == 0


def test_repush_is_acknowledged_without_appending(store: PostgresStore) -> None:
    store.apply_pushes([push("A", 1, 0, 1)])
    store.apply_pushes([push("B", 1, 1, 1)])
    [decision] = store.apply_pushes([push("A", 2, 0, 1)])
    assert decision == Accept(new=(), seqs=(1,))
    assert store.heads([DEFAULT_STORE]) == {DEFAULT_STORE: 2}


def test_stores_are_independent_logs_with_their_own_identity(store: PostgresStore) -> None:
    todo = store.create_store("todo")
    assert todo.server_id != store.server_id and todo.head == 0
    assert store.create_store("todo") == todo
    decisions = store.apply_pushes(
        [push("A", 1, 0, 1, 2, store="todo"), push("A", 1, 0, 1), push("B", 1, 0, 1, store="todo")]
    )
    assert decisions[0] == Accept(new=(ev("A", 1).at(1), ev("A", 2).at(2)), seqs=(1, 2))
    assert decisions[1] == Accept(new=(ev("A", 1).at(1),), seqs=(1,))
    assert decisions[2] == Ahead(2)
    assert store.heads(["todo", DEFAULT_STORE, "nope"]) == {"todo": 2, DEFAULT_STORE: 1}
    assert [e.key for e in store.read(0, 10, store_id="todo")] == [("A", 1), ("A", 2)]
    assert [info.store_id for info in store.stores()] == ["default", "todo"]
    assert store.store("nope") is None and store.store_count() == 2
    with pytest.raises(ValueError, match="not a valid store id"):
        store.create_store("a/b")


def test_log_and_identity_are_the_databases_not_the_nodes(pg_log: str) -> None:
    one = PostgresStore.open(pg_log)
    one.apply_pushes([push("A", 1, 0, 1, 2)])
    todo = one.create_store("todo")
    two = PostgresStore.open(pg_log)  # another node, or a restarted one
    assert two.server_id == one.server_id and two.head == 2
    assert two.create_store("todo") == todo
    assert two.read(0, 10) == [ev("A", 1).at(1), ev("A", 2).at(2)]
    # Two nodes: the second appends after what the first did, never over it.
    [decision] = two.apply_pushes([push("B", 1, 2, 1)])
    assert isinstance(decision, Accept) and decision.seqs == (3,)
    [decision] = one.apply_pushes([push("A", 2, 2, 3)])  # one's parent 2 is behind B
    assert decision == Ahead(3)
    one.close()
    two.close()


def test_a_page_read_is_bounded_in_bytes_but_always_makes_progress(store: PostgresStore) -> None:
    big = "p" * 10_000
    store.apply_pushes(
        [
            PushRequest(
                DEFAULT_STORE, "A", Push(1, 0, tuple(ev("A", i, pad=big) for i in range(1, 6)))
            )
        ]
    )
    assert len(store.read(0, 100, max_bytes=25_000)) == 2
    assert len(store.read(0, 100, max_bytes=1)) == 1
    assert len(store.read(0, 100)) == 5


def test_appends_announce_store_and_head(store: PostgresStore) -> None:
    listener = store.listen()
    try:
        store.apply_pushes([push("A", 1, 0, 1, 2)])
        assert listener.wait(10.0) == {DEFAULT_STORE: 2}
        assert listener.wait(0.05) == {}
    finally:
        listener.close()


def test_an_unmigrated_database_is_refused_and_left_alone(pg_url: str) -> None:
    with pytest.raises(StoreVersionError, match="no trio_sync schema: run `trio-sync migrate"):
        PostgresStore.open(pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('trio_sync.meta')").fetchone() == (None,)


def test_a_newer_schema_is_refused(pg_log: str) -> None:
    with psycopg.connect(pg_log) as conn:
        conn.execute(
            "UPDATE trio_sync.meta SET value = %s WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(StoreVersionError, match="this trio_sync knows up to"):
        PostgresStore.open(pg_log)


def test_an_unreachable_database_is_a_store_error_naming_it_without_password(
    pg_cluster: PostgresCluster,
) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{pg_cluster.port + 1}/nope"
    with pytest.raises(StoreError, match="is unreachable") as info:
        PostgresStore.open(url)
    assert "hunter2" not in str(info.value)


def test_a_database_that_goes_away_fails_pushes_with_a_store_error_then_recovers(
    pg_cluster: PostgresCluster, pg_log: str
) -> None:
    store = PostgresStore.open(pg_log)
    try:
        store.apply_pushes([push("A", 1, 0, 1)])
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'trio_sync'"
            )
        # The pool notices the dropped connections and opens new ones.
        [decision] = store.apply_pushes([push("A", 2, 1, 2)])
        assert isinstance(decision, Accept) and decision.seqs == (2,)
    finally:
        store.close()


def test_the_pool_reconnects_within_seconds_of_the_end_of_an_outage(
    pg_cluster: PostgresCluster, pg_log: str
) -> None:
    # What was tried: an outage, and nothing but the pool's own reconnection at work.
    # psycopg_pool retried 1, 2, 4, 8 s... after the first failure (~54 s late after a
    # 60 s outage): after 8 s down, its next attempt was ~7 s after the database was back.
    store = PostgresStore.open(pg_log)
    try:
        pg_cluster.stop()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="no connection within the timeout"):
                store.check_writable()  # finds the connection dead: reconnection begins
            assert time.monotonic() - started < 2.0  # the health check waits 1 s, not 5
            time.sleep(8.0)  # the outage
        finally:
            pg_cluster.start()
        back = time.monotonic()
        # Nothing asks the pool for a connection: it must reconnect by itself.
        while not store._pool.get_stats().get("pool_available"):
            assert time.monotonic() - back < 3.0, "the pool did not reconnect"
            time.sleep(0.05)
        store.check_writable()
        [decision] = store.apply_pushes([push("A", 1, 0, 1)])
        assert isinstance(decision, Accept)
    finally:
        store.close()


# --- two nodes appending at the same moment -------------------------------------------

_counter = iter(range(10**9))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(st.tuples(st.sampled_from("ABCD"), st.integers(1, 4)), min_size=2, max_size=12),
    split=st.integers(0, 12),
)
def test_concurrent_appends_through_two_nodes_are_contiguous(
    pg_shared_log: tuple[PostgresStore, PostgresStore],
    plan: list[tuple[str, int]],
    split: int,
) -> None:
    # Each example its own store: one database for the whole test keeps it fast.
    store_id = f"s{next(_counter)}"
    nodes = pg_shared_log
    nodes[0].create_store(store_id)
    # Every client pushes its batches in order, through either node, on its own thread;
    # "behind" answers are retried from the new head, as a client would.
    sent: dict[str, int] = {}
    batches: dict[str, list[tuple[int, int]]] = {}
    for client, size in plan:
        first = sent.get(client, 0) + 1
        sent[client] = first + size - 1
        batches.setdefault(client, []).append((first, size))
    barrier = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def run(client: str, node: PostgresStore) -> None:
        try:
            barrier.wait()
            parent = 0
            for push_id, (first, size) in enumerate(batches[client], 1):
                while True:
                    request = push(
                        client, push_id, parent, *range(first, first + size), store=store_id
                    )
                    [decision] = node.apply_pushes([request])
                    if isinstance(decision, Accept):
                        parent = max(decision.seqs)
                        break
                    assert isinstance(decision, Ahead), decision
                    parent = decision.head
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(client, nodes[(i + split) % 2]))
        for i, client in enumerate(sorted(batches))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    events = nodes[1].read(0, 1000, store_id=store_id)
    assert [e.seq for e in events] == list(range(1, sum(sent.values()) + 1))
    assert len({e.key for e in events}) == len(events)
    for client, last in sent.items():
        assert [e.client_seq for e in events if e.client_id == client] == list(range(1, last + 1))
    assert nodes[0].heads([store_id]) == {store_id: len(events)}


@pytest.fixture(scope="module")
def pg_shared_log(pg_cluster: PostgresCluster) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    from trio_sync.store._pg_schema import migrate

    url = pg_cluster.create_database("contiguous")
    migrate(url)
    nodes = (PostgresStore.open(url), PostgresStore.open(url))
    yield nodes
    for node in nodes:
        node.close()
