"""The event bus: bounded per-subscriber buffers, drops counted, a ring of recent events."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

from trio_sync.client import EventBus


async def test_subscriber_receives_in_order_with_fields_and_time(autojump_clock: object) -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    await trio.sleep(1.5)
    bus.publish("push.ack", count=3)
    bus.publish("sync.complete")
    first = await subscription.__anext__()
    assert (first.kind, first["count"], first.at) == ("push.ack", 3, 1.5)
    assert (await subscription.__anext__()).kind == "sync.complete"


async def test_slow_subscriber_loses_oldest_and_counts_them() -> None:
    bus = EventBus()
    slow = bus.subscribe(buffer=3)
    for n in range(10):
        bus.publish("pull.progress", done=n)  # never waits, however full the buffer
    assert slow.dropped == 7
    assert [(await slow.__anext__())["done"] for _ in range(3)] == [7, 8, 9]


async def test_iteration_wakes_on_publish_and_stops_on_close() -> None:
    bus = EventBus()
    seen: list[str] = []
    subscription = bus.subscribe()

    async def consume() -> None:
        async for notification in subscription:
            seen.append(notification.kind)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        bus.publish("connection.online")
        await trio.testing.wait_all_tasks_blocked()
        subscription.close()
    assert seen == ["connection.online"]


def test_dropped_subscription_unsubscribes_itself() -> None:
    bus = EventBus(clock=lambda: 0.0)
    subscription = bus.subscribe()
    del subscription
    gc.collect()
    bus.publish("sync.start")
    assert len(bus._subscribers) == 0


def test_recent_events_is_a_bounded_ring() -> None:
    bus = EventBus(clock=lambda: 0.0, recent=5)
    for n in range(8):
        bus.publish("push.ack", n=n)
    assert [event["n"] for event in bus.recent()] == [3, 4, 5, 6, 7]
    assert [event["n"] for event in bus.recent(2)] == [6, 7]
    assert bus.recent(0) == []


def test_buffer_must_hold_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventBus(clock=lambda: 0.0).subscribe(buffer=0)
