"""SimClock: the same virtual times and wake-up order as MockClock(autojump_threshold=0)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_sync.testing._clock import SimClock
from trio_sync.testing._loop import skip_idle_polls


def _run(clock: trio.abc.Clock, quiet: bool) -> list[tuple[float, str, int]]:
    """Tasks sleeping seeded amounts, waiting on each other and on timeouts; what woke
    when."""
    seen: list[tuple[float, str, int]] = []

    async def main() -> None:
        if quiet:
            skip_idle_polls()
        ready = trio.Event()
        send, receive = trio.open_memory_channel[int](0)

        async def sleeper(name: str, seed: int) -> None:
            rng = random.Random(seed)
            for step in range(20):
                await trio.sleep(rng.choice([0, 0.001, 0.25, 1.5, 3]))
                seen.append((trio.current_time(), name, step))
            if name == "s0":
                ready.set()

        async def waiter() -> None:
            with trio.move_on_after(2.5) as scope:
                await ready.wait()
            seen.append((trio.current_time(), "waiter", int(scope.cancelled_caught)))
            await ready.wait()
            seen.append((trio.current_time(), "waiter", 2))
            await send.send(7)

        async def receiver() -> None:
            value = await receive.receive()
            seen.append((trio.current_time(), "receiver", value))

        async with trio.open_nursery() as nursery:
            for index in range(4):
                nursery.start_soon(sleeper, f"s{index}", index)
            nursery.start_soon(waiter)
            nursery.start_soon(receiver)

    trio.run(main, clock=clock)
    return seen


def test_the_same_wake_ups_at_the_same_virtual_times_as_mockclock() -> None:
    # Sorted: outside the simulator's sandbox, Trio shuffles the tasks woken together
    # with its own unseeded source (the sandbox's seeded order is tested by the digests
    # of tests/testing/test_scenario.py).
    expected = sorted(_run(trio.testing.MockClock(autojump_threshold=0), quiet=False))
    assert sorted(_run(SimClock(), quiet=False)) == expected
    assert sorted(_run(SimClock(), quiet=True)) == expected
    assert expected[-1][0] > 10  # the run did sleep through virtual time
    assert (2.5, "waiter", 1) in expected  # the timeout fired at its virtual time


def test_a_thread_result_still_reaches_a_run_whose_polls_are_skipped() -> None:
    # run_sync_soon from a worker thread is the one way in: the skipped polls must not
    # hide it.
    async def main() -> int:
        skip_idle_polls()
        return await trio.to_thread.run_sync(lambda: 41) + 1

    assert trio.run(main, clock=SimClock()) == 42


def test_jump_moves_time_forward_only() -> None:
    clock = SimClock()
    clock.jump(2.5)
    assert clock.current_time() == 2.5
    with pytest.raises(ValueError, match="backwards"):
        clock.jump(-1)
