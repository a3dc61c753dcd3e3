"""``confirmed_stream``: caught up, it takes each merge's events as they are applied; a
reader far behind reads from the store; a dropped stream leaves nothing behind."""

from __future__ import annotations

import gc

import trio
import trio.lowlevel
import trio.testing

from trio_sync.client._client import _STREAM_PAGE

from .._virtual import World


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
