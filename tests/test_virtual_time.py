"""The client and server runtimes under Trio's MockClock (autojump), over the in-memory
transport with inline stores: no threads, no sockets, exact virtual times."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from trio_sync import ConnectionClosed
from trio_sync.protocol import Error, Pong, PushAck, backoff_delay

from ._virtual import World, drop_first


async def test_reconnect_backoff_is_jittered_capped_and_exact(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    async with world.client("A") as client:  # nothing listens yet
        await client.wait_status(lambda s: len(world.times("A", "phase")) >= 14)
    attempts = [t for t, _, w, d in world.trace if w == "phase" and d["phase"] == "connecting"]
    rng = random.Random("A")
    expected, now = [0.0], 0.0
    for failures in range(1, len(attempts)):
        now += backoff_delay(failures, base=1.0, cap=8.0, jitter=rng.random())
        expected.append(now)
    assert attempts == pytest.approx(expected, abs=1e-9)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 0.5 <= gaps[0] < 1.0 and all(4.0 <= gap < 8.0 for gap in gaps[4:])


async def test_commit_offline_goes_out_when_the_server_appears(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    async with world.client("A") as client:
        await client.commit("offline", {"i": 1})
        await trio.sleep(30)
        assert client.status.state == "disconnected" and client.status.pending == 1
        await world.start_server()
        await client.wait_synced()
        assert [e.args for e in client.confirmed_events()] == [{"i": 1}]


async def test_heartbeat_replaces_a_silent_connection_after_pong_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    lose_pongs = drop_first(Pong, count=10**9)
    async with world.client("A", drop=lose_pongs) as client:
        await client.wait_status(lambda s: len(world.times("A", "heartbeat.dead")) >= 2)
    # Pings at t=5 (connected at 0); silence until t=15, when pong_timeout (10s) is up.
    first_dead = world.times("A", "heartbeat.dead")[0]
    assert first_dead == 15.0
    connected = [t for t, _, w, d in world.trace if w == "phase" and d["phase"] == "connected"]
    assert connected[0] == 0.0 and 15.0 < connected[1] < 16.0  # replaced after a backoff


async def test_supervised_push_survives_a_lost_ack_without_waiting_for_the_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    async with world.client("A", drop=drop_first(PushAck), push_batch_size=2) as client:
        for i in range(5):
            await client.commit("e", {"i": i})
        await client.wait_synced()
        assert trio.current_time() < 1.0  # the echo counted as the lost ack
        assert [e.args["i"] for e in client.confirmed_events()] == list(range(5))


async def test_park_policy_stalls_after_a_lost_ack_and_says_stuck(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    async with world.client(
        "A", drop=drop_first(PushAck), push_batch_size=2, push_policy="park"
    ) as client:
        for i in range(5):
            await client.commit("e", {"i": i})
        status = await client.wait_status(lambda s: s.state == "stuck")
        # The ack timeout parked the loop at t=12; the echo of events 1-2 was only an
        # advance, so events 3-5 were never pushed. Two heartbeat ticks later: stuck.
        assert world.times("A", "push.deadline") == [12.0]
        assert trio.current_time() == 20.0
        assert status.pending == 3 and status.upstream_head == 2
        assert "no answer to push" in (status.last_error or "")
        await trio.sleep(1000)
        assert client.status.pending == 3  # for ever
        # The heartbeat kicked it at every tick from t=20, and said so each time.
        kicks = [n for n in client.recent_events() if n.kind == "heartbeat.recovery"]
        assert kicks and all(n["reason"] == "stuck-push" for n in kicks)
        assert kicks[0].at == 20.0


async def test_server_drops_a_connection_that_never_says_hello(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server()
    async with world.network.connect(world.url) as conn:
        farewell = await conn.receive()
        assert isinstance(farewell, Error) and not farewell.fatal
        assert farewell.reason == "no hello within 10s (hello_timeout)"
        with pytest.raises(ConnectionClosed):
            await conn.receive()
    assert trio.current_time() == 10.0  # ServerLimits.hello_timeout
