"""The stuck rules and the heartbeat's recoveries under MockClock: exact virtual times,
and each recovery announced on the event bus."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_sync.protocol import Pong, PullPage, backoff_delay
from trio_sync.server import ServerLimits

from .._virtual import World, drop_first


def attempts(world: World, client_id: str) -> list[float]:
    return [
        t
        for t, c, w, d in world.trace
        if c == client_id and w == "phase" and d["phase"] == "connecting"
    ]


async def test_three_fast_failures_in_a_row_are_stuck_at_the_third(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: a server that answers and refuses at once (its store is full of
    # connections): retrying keeps failing within 2 s of the answer.
    await world.start_server(limits=ServerLimits(max_connections_per_store=1))
    async with world.client("A") as a:
        await a.wait_synced()
        async with world.client("B") as b:
            stuck = await b.wait_status(lambda s: s.state == "stuck")
            rng = random.Random("B")
            expected = [0.0]
            for failures in (1, 2):
                delay = backoff_delay(failures, base=1.0, cap=8.0, jitter=rng.random())
                expected.append(expected[-1] + delay)
            # The third refusal (at the third attempt) makes it stuck, at once.
            assert attempts(world, "B")[:3] == pytest.approx(expected, abs=1e-9)
            assert trio.current_time() == pytest.approx(expected[2], abs=1e-9)
            assert stuck.connect_attempts == 3
            assert "the limit is 1 (max_connections_per_store)" in (stuck.last_error or "")
            kinds = [n.kind for n in b.recent_events()]
            assert kinds.count("connection.error") == 3 and "sync.stuck" in kinds


async def test_stuck_heals_when_the_cause_goes_away(
    world: World, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    await world.start_server(limits=ServerLimits(max_connections_per_store=1))
    holding, release = trio.Event(), trio.Event()

    async def hold_the_only_slot() -> None:
        async with world.client("A") as a:
            await a.wait_synced()
            holding.set()
            await release.wait()

    nursery.start_soon(hold_the_only_slot)
    await holding.wait()
    with trio.fail_after(600):
        async with world.client("B") as b:
            await b.wait_status(lambda s: s.state == "stuck")
            await trio.sleep(60)
            assert b.status.state == "stuck"  # still failing fast: still stuck
            release.set()
            healed = await b.wait_synced()
            assert healed.connect_attempts == 0 and healed.last_error is None
            kinds = [n.kind for n in b.recent_events()]
            assert kinds[-3:].count("sync.complete") == 1


async def test_an_offline_period_stays_disconnected(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Nothing answers at all: that is offline, which waiting does heal.
    async with world.client("A") as client:
        await trio.sleep(120)
        assert client.status.state in ("disconnected", "connecting")
        assert client.status.connect_attempts >= 10


async def test_retry_skips_the_backoff(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    async with world.client("A") as client:
        await trio.sleep(100)  # backing off at the 8 s cap by now
        before = len(attempts(world, "A"))
        client.retry()
        await trio.testing.wait_all_tasks_blocked()
        assert len(attempts(world, "A")) == before + 1
        assert attempts(world, "A")[-1] == trio.current_time()


async def test_each_heartbeat_recovery_is_announced(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    # A dead connection: every pong lost. Pinged at t=5, dead at t=15 (pong_timeout 10).
    async with world.client("A", drop=drop_first(Pong, count=10**9)) as client:
        events = client.subscribe()
        await client.wait_status(lambda s: len(world.times("A", "heartbeat.dead")) >= 1)
        recovery = [n for n in client.recent_events() if n.kind == "heartbeat.recovery"]
        assert [(n["reason"], n.at) for n in recovery] == [("dead-connection", 15.0)]
        assert events.dropped == 0

    # A stalled pull: the first pages lost, the server ahead, no progress for 2 ticks.
    world.trace.clear()
    async with world.client("B", drop=drop_first(PullPage, count=3)) as writer:
        await writer.commit("x", {})
        await writer.wait_synced()
    async with world.client("C", drop=drop_first(PullPage, count=10)) as client:
        await client.wait_synced()
        reasons = [n["reason"] for n in client.recent_events() if n.kind == "heartbeat.recovery"]
        assert "stalled-pull" in reasons
