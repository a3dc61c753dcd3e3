"""Where a durable write runs (``WritePlacement``): a pure rule, tested without a loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from trio_sync._store_runner import WritePlacement

T = TypeVar("T")

FAST, SLOW = 0.0003, 0.050


def run(placement: WritePlacement, seconds: float, times: int = 1) -> list[str]:
    """Runs ``times`` durable writes that each take ``seconds``; returns where each ran."""
    where = []
    for _ in range(times):
        chosen = placement.choose()
        where.append(chosen)
        placement.ran(chosen, seconds)
    return where


def test_fast_writes_stay_on_the_loop() -> None:
    placement = WritePlacement()
    assert run(placement, FAST, 1000) == ["inline"] * 1000


def test_one_slow_write_sends_the_next_ones_to_the_thread_then_probes() -> None:
    placement = WritePlacement(probe_after=4, fast_streak=100)
    assert run(placement, SLOW) == ["inline"]
    # Still slow in the thread: 4 writes there, then one probe on the loop.
    assert run(placement, SLOW, 4) == ["thread"] * 4
    assert run(placement, FAST) == ["inline"]  # the probe finds the disk fast again
    assert run(placement, FAST, 10) == ["inline"] * 10


def test_each_failed_probe_doubles_the_wait_up_to_the_cap() -> None:
    placement = WritePlacement(probe_after=4, max_probe_after=16, fast_streak=1000)
    gaps = []
    for _ in range(5):
        assert run(placement, SLOW) == ["inline"]  # the first write, then each probe
        threaded = 0
        while placement.choose() == "thread":
            run(placement, SLOW)
            threaded += 1
        gaps.append(threaded)
    # A disk that stays slow blocks the loop once per 4, 8, 16, 16... writes.
    assert gaps == [4, 8, 16, 16, 16]


def test_fast_writes_in_the_thread_bring_it_back_before_the_probe() -> None:
    placement = WritePlacement(probe_after=64, fast_streak=3)
    run(placement, SLOW)
    assert run(placement, FAST, 3) == ["thread"] * 3
    assert placement.choose() == "inline"
    # A slow write in the streak starts it again.
    run(placement, SLOW)
    assert (
        run(placement, FAST, 2) + run(placement, SLOW) + run(placement, FAST, 3) == ["thread"] * 6
    )
    assert placement.choose() == "inline"


def test_a_failed_write_counts_as_slow() -> None:
    placement = WritePlacement(probe_after=2)
    run(placement, float("inf"))
    assert placement.choose() == "thread"


def test_the_simulators_placement_never_looks_at_time() -> None:
    # Its stores run inline and its clock is virtual: no decision may depend on real time.
    placement = WritePlacement(adaptive=False)
    assert run(placement, SLOW, 100) == ["inline"] * 100


def test_a_busy_disk_sends_durable_writes_to_the_thread() -> None:
    # While file transfers write to the same disk, an fsync may wait behind megabytes:
    # the loop is not blocked on it, however fast the last ones were.
    placement = WritePlacement()
    assert placement.choose(disk_busy=True) == "thread"
    placement.ran("thread", FAST)
    assert placement.choose() == "inline"
    assert WritePlacement(adaptive=False).choose(disk_busy=True) == "inline"


async def test_the_hop_to_the_thread_is_not_counted_as_the_disks_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What was tried: writes in the thread whose hop takes 10 ms (under a busy loop the
    # thread waits that long for the interpreter's lock to hand its result back) while the
    # write itself takes 0.3 ms, on a fake clock. Counted with the hop, each looked slow,
    # and the loop sent 64 more writes to the thread after every slow fsync.
    import trio_sync._store_runner as runner

    now = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])

    def write() -> str:
        now[0] += FAST
        return "written"

    async def slow_hop(fn: Callable[..., T], /, *args: Any) -> T:
        now[0] += 0.010
        result = fn(*args)
        now[0] += 0.010
        return result

    placement = WritePlacement(probe_after=64, fast_streak=3)
    run(placement, SLOW)  # a slow fsync: the next writes go to the thread
    for _ in range(3):
        assert placement.choose() == "thread"
        assert await runner.run_durable(placement, slow_hop, write) == "written"
    assert placement.choose() == "inline"  # three fast writes in a row: the disk is fast
