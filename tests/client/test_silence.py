"""A connection that freezes while a push waits is replaced in two round-trip timeouts,
not the heartbeat's pong timeout; one that is only slow (pongs still come) is kept.
Exact virtual times under MockClock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing

from trio_sync import HeartbeatTimings
from trio_sync._store_runner import inline
from trio_sync.protocol import Message, PullPage, PushAck
from trio_sync.transport import MemoryNetwork

from .._virtual import TIMINGS, World

#: The heartbeat far away (a ping at 50 s, dead at 150 s): only the silence watch acts.
#: The push answer timeout stays fixed at 12 s (TIMINGS' floor equals its cap).
QUIET_HEARTBEAT = attrs.evolve(
    TIMINGS, heartbeat=HeartbeatTimings(interval=50.0, pong_timeout=100.0, stuck_ticks=2)
)


def freeze_first_answer(for_seconds: float) -> tuple[list[str], Callable[[Message], float]]:
    """A network delay that holds up whichever comes first of the first push ack and the
    first page with events (its echo), and (the stream being ordered) everything the
    server sends after it."""
    held: list[str] = []

    def delay(message: Message) -> float:
        answer = isinstance(message, PushAck) or (
            isinstance(message, PullPage) and bool(message.events)
        )
        if answer and not held:
            held.append(message.TYPE)
            return for_seconds
        return 0.0

    return held, delay


async def test_a_frozen_connection_is_replaced_after_a_probe(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: the server's answer to A's first push (its ack or the page that
    # echoes the event, whichever it sends first) held up 1,000 s on an ordered stream, so
    # nothing at all reaches A after it (not even pongs). Before: A waited for the
    # heartbeat (pong timeout) while its push backed off on the frozen connection.
    held, delay = freeze_first_answer(1000.0)
    world.network = MemoryNetwork(delay=delay, loses=world.network.loses)
    await world.start_server()
    async with world.client("A", timings=QUIET_HEARTBEAT) as client:
        await client.commit("note.added", {"n": 1})
        await client.wait_synced()
        assert len(held) == 1
        sent = world.times("A", "push.send")[0]
        # A probe after one answer timeout (12 s) of silence, dead after another.
        assert world.times("A", "silence.probe") == [sent + 12.0]
        assert world.times("A", "silence.dead") == [sent + 24.0]
        assert world.times("A", "heartbeat.dead") == []
        recoveries = [n for n in client.recent_events() if n.kind == "heartbeat.recovery"]
        assert [(n["reason"], n.at) for n in recoveries] == [("silent-connection", sent + 24.0)]
        assert client.status.state == "synced"
        assert client.status.pending == 0


async def test_a_slow_server_that_still_answers_pings_is_kept(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: every ack and page to A lost (a server slow to commit, or one that
    # drops them), but pongs come back: the connection is alive, so it is kept.
    await world.start_server()
    world.drops["A"] = lambda message: isinstance(message, (PushAck, PullPage))
    async with world.client("A", timings=QUIET_HEARTBEAT) as client:
        await client.commit("note.added", {"n": 1})
        await trio.sleep(40.0)
        # One probe per push sent (the first and each retry), each answered by a pong.
        pushes, probes = world.times("A", "push.send"), world.times("A", "silence.probe")
        assert len(probes) >= 2
        assert all(any(0 < p - s <= 12.0 for s in pushes) for p in probes)
        assert len(probes) <= len(pushes)
        assert world.times("A", "silence.dead") == []
        assert len(world.times("A", "phase")) == 2  # connecting, connected: never replaced


async def test_a_server_slow_to_commit_still_answers_pings(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: the server's commit of every push takes 30 s (a stalled disk). The
    # server answers pushes in their own task, so the probe's pong comes at once and the
    # connection is kept; before, the pong waited behind the commit and the client took
    # the connection for silent at t=24.
    async def slow_commits(fn: Callable[..., Any], /, *args: Any) -> Any:
        if getattr(fn, "__name__", "") == "apply_pushes":
            await trio.sleep(30.0)
        return await inline(fn, *args)

    await world.start_server(run_store=slow_commits)
    async with world.client("A", timings=QUIET_HEARTBEAT) as client:
        await client.commit("note.added", {"n": 1})
        await client.wait_synced()
        # The echo and the ack leave the server at the same instant, in either order:
        # synced may come with the echo, the ack a few steps later (virtual time stands
        # still while this task stays runnable).
        for _ in range(100):
            if world.times("A", "push.ack"):
                break
            await trio.lowlevel.checkpoint()
        sent = world.times("A", "push.send")[0]
        assert world.times("A", "push.ack")[0] == sent + 30.0
        assert world.times("A", "silence.probe")[0] == sent + 12.0  # answered: kept
        assert world.times("A", "silence.dead") == []
