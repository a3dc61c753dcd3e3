"""``confirmed_stream``: caught up, it takes each merge's events as they are applied; a
reader far behind reads from the store; a dropped stream leaves nothing behind; a reset
starts it over on the new log."""

from __future__ import annotations

import gc
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import trio_sync
from trio_sync.client._streams import _STREAM_PAGE

from .._virtual import World
from ..conftest import FAST, WAIT


async def test_fast_and_slow_readers_see_every_event_once_in_order(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: a reader that keeps up and one that stops for 30 s while 2.5 pages
    # of events arrive (so it stops listening and reads them back from the store).
    await world.start_server()
    total = _STREAM_PAGE * 5 // 2
    async with world.client("A") as a, world.client("B") as b:
        fast: list[int] = []
        slow: list[int] = []

        async def read(into: list[int], pause_after: int | None) -> None:
            async for event in a.confirmed_stream():
                into.append(event.args["i"])
                if len(into) == pause_after:
                    await trio.sleep(30)
                if len(into) == total:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, fast, None)
            nursery.start_soon(read, slow, 1)
            await trio.sleep(1)  # both are waiting for news
            for first in range(0, total, 50):
                await b.commit_many([("n", {"i": i}) for i in range(first, first + 50)])
                await trio.sleep(0.01)
        assert fast == list(range(total))
        assert slow == list(range(total))


async def test_a_dropped_stream_stops_listening(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    async with world.client("A") as a, world.client("B") as b:
        listeners = len(a._core.merge_listeners)  # the file view's own
        stream = a.confirmed_stream()
        await b.commit("n", {"i": 0})
        first = await stream.__anext__()
        assert first.args == {"i": 0}
        with trio.move_on_after(1):
            await stream.__anext__()  # caught up: now it listens
        assert len(a._core.merge_listeners) == listeners + 1
        await (
            trio.lowlevel.checkpoint()
        )  # Trio lets go of the cancelled wait's frame at the next step
        del stream
        gc.collect()
        await b.commit("n", {"i": 1})
        await b.wait_synced()
        await a.wait_synced()
        assert a._core.durable_head == 2
        assert len(a._core.merge_listeners) == listeners


async def test_a_stream_starts_over_on_the_new_log_after_a_reset(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # What was tried: a stream that read the old server's 3 events; the server's database
    # is replaced (2 other events on it) and the client reset. The stream goes on with the
    # new log from its first event: it skips none of it (its cursor was at 3) and replays
    # nothing of the old one.
    first: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "one.sqlite3"))
    async with trio_sync.open_client(
        first.url, str(tmp_path / "a.sqlite3"), client_id="A", timings=FAST
    ) as a:
        stream = a.confirmed_stream(after=0)
        for i in range(3):
            await a.commit("old", {"i": i})
        with trio.fail_after(WAIT):
            old = [await stream.__anext__() for _ in range(3)]
        assert [(e.name, e.seq) for e in old] == [("old", 1), ("old", 2), ("old", 3)]
        await first.shutdown()
        second: trio_sync.Server = await nursery.start(
            partial(trio_sync.serve, str(tmp_path / "two.sqlite3"), port=first.port)
        )
        async with trio_sync.open_client(second.url, str(tmp_path / "b.sqlite3")) as b:
            await b.commit("new", {"i": 0})
            await b.commit("new", {"i": 1})
            with trio.fail_after(WAIT):
                await b.wait_synced()
        a.retry()
        with trio.fail_after(WAIT):
            await a.wait_status(lambda status: status.state == "incompatible")
        await a.reset(keep_pending=False)
        with trio.fail_after(WAIT):
            new = [await stream.__anext__() for _ in range(2)]
        assert [(e.name, e.seq) for e in new] == [("new", 1), ("new", 2)]


async def test_everything_waiting_on_a_client_ends_when_its_block_exits(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: a confirmed_stream(), a status_changes(), a wait_status() and a
    # subscription, each in a task of the application's own nursery, started inside the
    # block and still waiting when it exits. They used to wait for ever, and the status
    # still said "synced", connected. Iterators end (a task iterating beside the block
    # ends with it); a wait that can never be met raises ClientClosed.
    await world.start_server()
    ended: dict[str, str] = {}

    last_status: list[trio_sync.SyncStatus] = []

    async def follow(name: str, iterator: Any) -> None:
        try:
            async for item in iterator:
                if isinstance(item, trio_sync.SyncStatus):
                    last_status.append(item)
        except trio_sync.ClientClosed:
            ended[name] = "ClientClosed"
        else:
            ended[name] = "ended"

    async def wait(client: trio_sync.Client) -> None:
        try:
            await client.wait_status(lambda s: False)
        except trio_sync.ClientClosed:
            ended["wait_status"] = "ClientClosed"

    async with trio.open_nursery() as nursery:
        async with world.client("A") as client:
            await client.commit("x", {})
            await client.wait_synced()
            nursery.start_soon(follow, "confirmed_stream", client.confirmed_stream())
            nursery.start_soon(follow, "status_changes", client.status_changes())
            nursery.start_soon(follow, "subscription", client.subscribe())
            nursery.start_soon(wait, client)
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
        with trio.fail_after(WAIT):
            while len(ended) < 4:  # noqa: ASYNC110 (the tasks report as they end)
                await trio.sleep(0.001)
        assert trio.current_time() - started < 0.01  # at once, not at some timeout
    assert ended == {
        "confirmed_stream": "ended",
        "status_changes": "ended",
        "subscription": "ended",
        "wait_status": "ClientClosed",
    }
    assert last_status and last_status[-1].state == "disconnected"  # told, then ended
    status = client.status
    assert (status.state, status.connected) == ("disconnected", False)
    late = client._core.bus.subscribe()  # (subscribe() itself refuses: ClientClosed)
    assert [n async for n in late] == []
    for make in (client.confirmed_stream, client.status_changes, client.subscribe):
        with pytest.raises(trio_sync.ClientClosed):
            make()  # made after the block exited: a mistake, said at once
