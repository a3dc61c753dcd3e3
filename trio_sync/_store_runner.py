"""Where store calls run: a worker thread in production, inline in the simulator.

The stores are synchronous. In production an fsync must not block the event loop for long,
so calls go to a worker thread (and are not abandoned on cancellation: a durable write
finishes). Under the simulator's MockClock with autojump a thread breaks determinism (the
clock jumps while the thread works), so the simulator runs them inline.

A hop to a worker thread and back costs 100-200 us on a small machine, as much as the fsync
of a small SQLite transaction on a fast disk: for a task committing one event at a time the
hop is half the price of a commit. :class:`WritePlacement` decides, from how long durable
writes have been taking, when one may run on the event loop instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

import trio

from ._errors import StoreError

T = TypeVar("T")


class StoreRunner(Protocol):
    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


async def in_worker_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """Runs a store call in a worker thread; cancellation waits for it to finish."""
    return await trio.to_thread.run_sync(fn, *args)


@trio.lowlevel.enable_ki_protection
async def despite_interrupts(step: Callable[[], Awaitable[object]]) -> None:
    """Runs ``step`` to its end even if Ctrl-C comes meanwhile: each KeyboardInterrupt
    runs it again (it must bear that: closing a store, say), and the first is raised once
    it ended, whatever else it raised (a store left open would refuse this process until
    the garbage collector closed it)."""
    interrupted: KeyboardInterrupt | None = None
    try:
        while True:
            try:
                await step()
                return
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc
    finally:
        if interrupted is not None:
            raise interrupted


async def inline(fn: Callable[..., T], /, *args: Any) -> T:
    """Runs a store call right here (deterministic; used by the simulator).

    A cancellation point like a real call (a simulated crash can land before the write),
    but it does not yield to the scheduler: a store call in memory takes no time.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    return fn(*args)


Placement = Literal["inline", "thread"]


async def run_durable(
    placement: WritePlacement | None,
    run_store: StoreRunner,
    fn: Callable[..., T],
    /,
    *args: Any,
    disk_busy: bool = False,
) -> T:
    """Runs the durable write ``fn(*args)`` where ``placement`` says (through ``run_store``
    when there is none), and tells it how long the write took.

    Raises:
        StoreError: As ``fn`` (and the placement counts it as a slow write).
    """
    if placement is None:
        return await run_store(fn, *args)
    where = placement.choose(disk_busy=disk_busy)
    took = math.inf

    def timed() -> T:
        # The write alone, wherever it runs: the hop to a thread and back is no part of
        # how fast the disk is (and under a busy event loop it takes milliseconds: the
        # thread waits for the interpreter's lock to hand its result back).
        nonlocal took
        started = time.perf_counter()
        result = fn(*args)
        took = time.perf_counter() - started
        return result

    try:
        if where == "inline":
            await trio.lowlevel.checkpoint_if_cancelled()
            result = timed()
        else:
            result = await run_store(timed)
    except StoreError:
        placement.ran(where, math.inf)  # a failing disk is no fast one
        raise
    placement.ran(where, took)
    return result


def placement_for(run_store: StoreRunner) -> WritePlacement | None:
    """How durable writes are placed for a runtime whose store calls go to ``run_store``:
    adaptively for the worker-thread runner, always inline for the inline runner (the
    simulator's: its decisions then never depend on real time), and None (everything
    through ``run_store``) for any other runner."""
    if run_store is in_worker_thread:
        return WritePlacement()
    if run_store is inline:
        return WritePlacement(adaptive=False)
    return None


class WritePlacement:
    """Decides where a durable write runs: on the event loop while the disk is fast, in a
    worker thread once it is not (sans-IO: durations are passed in).

    A durable write runs inline while every one measured lately took at most ``fast``
    seconds: then it blocks the loop for less than a worker-thread hop would cost anyway.
    One slower write sends the next ``probe_after`` durable writes to the thread; then one
    runs inline again as a probe. Each probe that finds the disk still slow doubles the
    wait before the next (up to ``max_probe_after``), so a slow disk blocks the loop once
    in thousands of writes at most. Writes in the thread are measured too (the write
    alone, not the hop: see :func:`run_durable`), and the disk counts as fast again only
    after ``fast_streak`` of them in a row were fast.
    """

    def __init__(
        self,
        *,
        fast: float = 0.002,
        probe_after: int = 64,
        max_probe_after: int = 8192,
        fast_streak: int = 8,
        adaptive: bool = True,
    ) -> None:
        #: False: always inline (the simulator's stores, which take no time).
        self.adaptive = adaptive
        self.fast = fast
        self._probe_after = probe_after
        self._max_probe_after = max_probe_after
        self._fast_streak = fast_streak
        self._initial_probe_after = probe_after
        #: Durable writes still to send to the thread before the next probe (0: inline).
        self._threaded_left = 0
        #: Fast writes in a row measured in the thread.
        self._streak = 0

    @property
    def inline(self) -> bool:
        """Whether the next durable write may run on the event loop."""
        return self._threaded_left == 0 or not self.adaptive

    def choose(self, *, disk_busy: bool = False) -> Placement:
        """Where the next durable write runs; report its duration with :meth:`ran`.

        ``disk_busy``: the process is writing to the disk meanwhile (file transfers): an
        fsync may then wait behind megabytes of other writes, so it goes to the thread
        however fast the last ones were.
        """
        if not self.adaptive:
            return "inline"
        return "inline" if self.inline and not disk_busy else "thread"

    def ran(self, placement: Placement, seconds: float) -> None:
        """A durable write chosen with :meth:`choose` took ``seconds`` (its own time)."""
        if not self.adaptive:
            return
        slow = seconds > self.fast
        if placement == "inline":
            if slow:
                self._threaded_left = self._probe_after
                self._probe_after = min(self._probe_after * 2, self._max_probe_after)
                self._streak = 0
            else:
                self._probe_after = self._initial_probe_after
            return
        self._streak = 0 if slow else self._streak + 1
        if self._threaded_left == 0:
            return  # sent to the thread for another reason (a busy disk)
        self._threaded_left -= 1
        if self._threaded_left > 0 and self._streak >= self._fast_streak:
            self._threaded_left = 0  # the disk is fast again: no need to wait for the probe
            self._probe_after = self._initial_probe_after
