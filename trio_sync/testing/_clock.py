"""The simulator's clock: what ``MockClock(autojump_threshold=0)`` does, cheaper per pass.

Same virtual times, same order of wake-ups as Trio's MockClock with an autojump threshold
of 0; two costs go:

- ``current_time()`` returns the virtual time as is (MockClock reads the real clock and
  scales it by its rate, 0, on every call).
- The idle pass before each jump: MockClock's autojump runs only in a scheduler pass with
  nothing to run (the loop polls for I/O, finds none, then jumps), and the tasks whose
  deadline that reaches run in the next pass. Here the clock jumps when the run loop asks
  how long to sleep with nothing runnable, so they run in that same pass. The jump is the
  same (the next deadline minus now, added to the time the same way), so is every wake-up
  time; no task ran in the pass that goes, and an empty batch draws nothing from the
  scheduler's seeded shuffle, so every later batch is shuffled the same too.

A simulation has no sockets; Trio's own wake-up socket is written only by
``run_sync_soon`` (from another thread or a signal handler): while that has work queued,
or a task waits in ``wait_all_tasks_blocked``, the clock does not jump (as MockClock, which
would see the I/O or wake that task first).
"""

from __future__ import annotations

import math

import trio.abc
from trio._core._run import GLOBAL_RUN_CONTEXT

#: What the run loop sleeps at most when the clock does not jump (it caps it itself).
_NO_JUMP = 86400.0


class SimClock(trio.abc.Clock):
    """Virtual time that jumps to the next deadline whenever no task can run."""

    def __init__(self) -> None:
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Trio's run loop asks this only when no task is runnable.
        now = self._now
        if deadline <= now:
            return 0
        if deadline == math.inf:
            return _NO_JUMP  # nothing will ever wake: Trio's loop waits (for a signal)
        runner = GLOBAL_RUN_CONTEXT.runner
        if runner.waiting_for_idle:
            return _NO_JUMP  # the run loop wakes those tasks first, then asks again
        entries = runner.entry_queue
        if entries.queue or entries.idempotent_queue:
            return 0  # a callback is on its way in: poll, run it, then ask again
        # MockClock._autojump: jump by next_deadline() - current_time().
        self._now += deadline - now
        return 0

    def jump(self, seconds: float) -> None:
        """Moves virtual time forward by ``seconds`` (as ``MockClock.jump``).

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds
