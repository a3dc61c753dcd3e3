"""The whole system over real loopback WebSockets and real SQLite files."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

import trio_sync
from trio_sync import IncompatibleServer, StoreInUse
from trio_sync.store import ClientStore

from .conftest import FAST, WAIT, ClientFactory, wait_converged


def check_logs(clients: list[trio_sync.Client], committed: dict[str, list[int]]) -> None:
    """Identical logs; every committed event exactly once; each client's in commit order."""
    logs = [client.confirmed_events() for client in clients]
    for log in logs:
        assert [(e.seq, e.key) for e in log] == [(e.seq, e.key) for e in logs[0]]
    log = logs[0]
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    keys = [e.key for e in log]
    assert len(keys) == len(set(keys))
    for client_id, values in committed.items():
        mine = [e for e in log if e.client_id == client_id]
        assert [e.client_seq for e in mine] == list(range(1, len(values) + 1))
        assert [e.args["i"] for e in mine] == values
    for client in clients:
        assert client.pending_events() == []
        assert client.status.pending == 0


async def test_three_clients_interleaving_batches_end_with_identical_logs(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    committed: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    rng = random.Random(7)
    async with (
        open_test_client(server.url, "A", push_batch_size=3) as a,
        open_test_client(server.url, "B", push_batch_size=10) as b,
        open_test_client(server.url, "C", push_batch_size=1) as c,
    ):
        clients = [a, b, c]

        async def commit_batches(client: trio_sync.Client, batches: list[int]) -> None:
            for size in batches:
                for _ in range(size):
                    i = len(committed[client.client_id])
                    committed[client.client_id].append(i)
                    await client.commit("todo.created", {"i": i})
                await trio.sleep(rng.random() / 100)

        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(
                    commit_batches, client, [rng.choice([1, 2, 10, 25]) for _ in range(8)]
                )
        await wait_converged(*clients)
        check_logs(clients, committed)
        assert a.status.state == "synced" and a.status.connected


async def test_commit_offline_then_reconnect(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    db = str(tmp_path / "server.sqlite3")
    async with trio.open_nursery() as nursery:
        first: trio_sync.Server = await nursery.start(trio_sync.serve, db)
        port = first.port
        nursery.cancel_scope.cancel()  # the server goes away; its port stays ours to reuse

    async with open_test_client(f"ws://127.0.0.1:{port}", "A") as client:
        for i in range(5):
            await client.commit("offline", {"i": i})  # works with no server at all
        with trio.fail_after(WAIT):
            await client.wait_status(lambda s: s.state == "disconnected" and s.last_error)
        assert client.status.pending == 5 and len(client.pending_events()) == 5
        assert "cannot connect" in (client.status.last_error or "")

        async with trio.open_nursery() as nursery:
            await nursery.start(trio_sync.serve, db, "127.0.0.1", port)
            with trio.fail_after(WAIT):
                await client.wait_synced()
            assert [e.args["i"] for e in client.confirmed_events()] == list(range(5))
            nursery.cancel_scope.cancel()


async def test_server_restart_on_the_same_database_loses_nothing(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    db = str(tmp_path / "server.sqlite3")
    committed: dict[str, list[int]] = {"A": [], "B": []}
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()
        server_done = trio.Event()

        async def run_server(port: int, *, task_status: trio.TaskStatus[trio_sync.Server]) -> None:
            with server_scope:
                await trio_sync.serve(db, "127.0.0.1", port, task_status=task_status)
            server_done.set()

        server: trio_sync.Server = await outer.start(run_server, 0)
        async with (
            open_test_client(server.url, "A", push_batch_size=4) as a,
            open_test_client(server.url, "B", push_batch_size=7) as b,
        ):

            async def keep_committing(client: trio_sync.Client, n: int) -> None:
                for i in range(n):
                    committed[client.client_id].append(i)
                    await client.commit("e", {"i": i})
                    await trio.sleep(0.002)

            async with trio.open_nursery() as writers:
                writers.start_soon(keep_committing, a, 150)
                writers.start_soon(keep_committing, b, 150)
                await trio.sleep(0.1)
                server_scope.cancel()  # the server stops mid-stream
                with trio.fail_after(WAIT):
                    await a.wait_status(lambda s: not s.connected)
                    await server_done.wait()  # it closed its database
                server_scope = trio.CancelScope()
                await outer.start(run_server, server.port)  # back, same database and port
            await wait_converged(a, b)
            check_logs([a, b], committed)
        outer.cancel_scope.cancel()


async def test_second_client_on_the_same_store_is_refused(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with open_test_client(server.url, "A"):
        with pytest.raises(StoreInUse, match="in use"):
            async with open_test_client(server.url, "A"):
                pass  # pragma: no cover


async def test_schema_mismatch_is_incompatible_and_says_why(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with open_test_client(server.url, "A", schema_name="todo", schema_version=2) as client:
        await client.commit("x", {})
        with trio.fail_after(WAIT), pytest.raises(IncompatibleServer, match="does not match"):
            await client.wait_synced()
        assert client.status.state == "incompatible" and client.status.pending == 1


async def test_replaced_server_database_is_detected(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(
            db: str, port: int, *, task_status: trio.TaskStatus[trio_sync.Server]
        ) -> None:
            with scope:
                await trio_sync.serve(db, "127.0.0.1", port, task_status=task_status)

        server: trio_sync.Server = await nursery.start(run, str(tmp_path / "one.sqlite3"), 0)
        async with open_test_client(server.url, "A") as client:
            await client.commit("x", {})
            with trio.fail_after(WAIT):
                await client.wait_synced()
            scope.cancel()
            scope = trio.CancelScope()
            await nursery.start(run, str(tmp_path / "two.sqlite3"), server.port)
            with trio.fail_after(WAIT), pytest.raises(IncompatibleServer, match="replaced"):
                await client.wait_synced()
        nursery.cancel_scope.cancel()


async def test_confirmed_stream_delivers_other_clients_events(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with open_test_client(server.url, "A") as a, open_test_client(server.url, "B") as b:
        await a.commit("before", {"i": 0})
        await wait_converged(a, b)
        seen: list[trio_sync.Event] = []

        async def watch() -> None:
            async for event in a.confirmed_stream():
                seen.append(event)
                if len(seen) == 3:
                    return

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for i in range(3):
                    await b.commit("from.b", {"i": i})
        assert [(e.client_id, e.args["i"]) for e in seen] == [("B", 0), ("B", 1), ("B", 2)]
        replay = []
        async for event in a.confirmed_stream(after=0):
            replay.append(event)
            if len(replay) == 4:
                break
        assert replay == a.confirmed_events()


async def test_client_is_unusable_after_its_block(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with open_test_client(server.url, "A") as client:
        pass
    with pytest.raises(trio_sync.ClientClosed):
        await client.commit("x", {})


async def test_a_client_refuses_calls_from_another_trio_run(tmp_path: Path) -> None:
    # Tried (a review's finding): an open client handed to a second trio.run in a worker
    # thread. Its commit went through and a later wake-up crashed the owning run with a
    # TrioInternalError. Now each call from there is refused with a clear error, nothing
    # is recorded, and the owning run goes on.
    async with trio_sync.open_client(
        "ws://127.0.0.1:1", str(tmp_path / "c.sqlite3"), timings=FAST
    ) as client:
        await client.commit("x", {"i": 0})
        saved = await client.files.save(b"saved", path="saved")
        stream = client.confirmed_stream()
        changes = client.status_changes()
        subscription = client.subscribe()
        calls: list[Callable[[], object]] = [
            lambda: trio.run(client.commit, "x", {"i": 1}),
            lambda: trio.run(client.commit_many, [("x", {"i": 2})]),
            lambda: trio.run(client.wait_synced),
            lambda: client.status,
            # A second review's finding: the files' calls went through, a delete was
            # recorded though its caller got an error, and the owning run then died.
            lambda: trio.run(partial(client.files.save, b"contents", path="p")),
            lambda: trio.run(client.files.delete, saved),
            lambda: trio.run(client.files.wait_idle),
            # Iterators made here and iterated there (each would wait to be woken here).
            lambda: trio.run(stream.__anext__),
            lambda: trio.run(changes.__anext__),
            lambda: trio.run(subscription.__anext__),
        ]
        for call in calls:
            with (
                pytest.raises(RuntimeError, match="belongs to the Trio run that opened it"),
                trio.fail_after(WAIT),  # a wait that is not refused would never end
            ):
                await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        await client.commit("x", {"i": 3})
        assert [e.args.get("i") for e in client.pending_events()] == [0, None, 3]
        assert client.status.pending == 3
        assert [info.id for info in client.files.list()] == [saved]


def test_the_status_after_the_run_ended_is_the_one_it_closed_with(tmp_path: Path) -> None:
    # Tried (a review's finding): reading client.status once trio.run had returned (it
    # raised "must be called from async context").
    async def main() -> trio_sync.Client:
        async with trio_sync.open_client(
            "ws://127.0.0.1:1", str(tmp_path / "c.sqlite3"), timings=FAST
        ) as client:
            await client.commit("x", {})
        return client

    client = trio.run(main)
    assert (client.status.state, client.status.pending) == ("disconnected", 1)


@pytest.mark.parametrize("client_id", ["", 5, "a\nb"])
async def test_a_client_id_that_cannot_be_one_is_refused_before_the_store_opens(
    tmp_path: Path, client_id: object
) -> None:
    # Tried (a review's finding): client_id="" made up a random id on a fresh store, and
    # the same call failed on the next start (StoreMismatch: the store belongs to that
    # random id, not ''); client_id=5 on an existing store said StoreMismatch too.
    path = tmp_path / "c.sqlite3"
    async with trio_sync.open_client("ws://127.0.0.1:1", str(path), client_id="A"):
        pass
    fresh = tmp_path / "fresh.sqlite3"
    for store in (path, fresh):
        with pytest.raises(ValueError, match="client_id"):
            async with trio_sync.open_client(
                "ws://127.0.0.1:1",
                str(store),
                client_id=client_id,  # type: ignore[arg-type]
            ):
                pass  # pragma: no cover
    assert not fresh.exists()


def test_client_store_open_refuses_an_empty_client_id(tmp_path: Path) -> None:
    # Tried (a second review's finding): ClientStore.open(path, "") on a fresh store
    # recorded "" as the client id; every later commit then failed for good.
    with pytest.raises(ValueError, match="client_id"):
        ClientStore.open(str(tmp_path / "c.sqlite3"), "")
    assert not (tmp_path / "c.sqlite3").exists()


async def test_a_client_id_from_a_str_enum_is_its_plain_string(tmp_path: Path) -> None:
    class Device(enum.StrEnum):
        PHONE = "phone"

    async with trio_sync.open_client(
        "ws://127.0.0.1:1", str(tmp_path / "c.sqlite3"), client_id=Device.PHONE
    ) as client:
        assert type(client.client_id) is str and client.client_id == "phone"
    # The store module takes one too (a third review found it refused there).
    store = ClientStore.open(str(tmp_path / "c.sqlite3"), Device.PHONE)
    store.close()


async def test_user_errors_in_the_block_come_out_unwrapped(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with pytest.raises(KeyError):
        async with open_test_client(server.url, "A"):
            raise KeyError("mine")


async def test_bad_push_policy_is_refused_before_anything_opens(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown push_policy"):
        async with trio_sync.open_client(
            "ws://127.0.0.1:1", str(tmp_path / "c.sqlite3"), push_policy="sometimes", timings=FAST
        ):
            pass  # pragma: no cover
    assert not (tmp_path / "c.sqlite3").exists()


async def test_wait_synced_is_a_barrier_across_clients(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # What B had on the server before A called wait_synced is in A's log when it returns,
    # even though A had not heard of it yet (no polling, no sleeping).
    async with open_test_client(server.url, "A") as a, open_test_client(server.url, "B") as b:
        for i in range(20):
            await b.commit("from.b", {"i": i})
            with trio.fail_after(WAIT):
                await b.wait_synced()
                await a.wait_synced()
            assert [e.args["i"] for e in a.confirmed_events()] == list(range(i + 1))
