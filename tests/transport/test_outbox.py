"""The outbox's queues: room, order, and what a sender learns without waiting."""

from __future__ import annotations

import pytest
import trio

from trio_sync import ConnectionClosed
from trio_sync.transport._outbox import Outbox


async def test_has_room_says_whether_a_put_would_wait() -> None:
    outbox = Outbox(control_capacity=2, bulk_capacity=1)
    assert outbox.has_room(bulk=True) and outbox.has_room(bulk=False)
    await outbox.put("page", bulk=True)
    assert not outbox.has_room(bulk=True)  # one page at most
    assert outbox.has_room(bulk=False)  # control frames have their own queue
    await outbox.put("ack 1", bulk=False)
    await outbox.put("ack 2", bulk=False)
    assert not outbox.has_room(bulk=False)
    # Control first, then the page; each take makes room again.
    assert [await outbox.take() for _ in range(3)] == ["ack 1", "ack 2", "page"]
    assert outbox.has_room(bulk=True) and outbox.has_room(bulk=False)


async def test_a_put_without_room_waits_for_the_writer(autojump_clock: trio.abc.Clock) -> None:
    outbox = Outbox(bulk_capacity=1)
    await outbox.put("page 1", bulk=True)
    queued = []

    async def second() -> None:
        await outbox.put("page 2", bulk=True)
        queued.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.sleep(5)
        assert queued == []  # still waiting: has_room said so
        assert await outbox.take() == "page 1"
    assert queued == [5.0]
    outbox.close("gone")
    with pytest.raises(ConnectionClosed, match="gone"):
        await outbox.put("page 3", bulk=True)
