"""The bulk threads: blob work off the event loop, at a lower priority, never abandoned."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import trio

from trio_sync._store_runner import in_worker_thread, inline
from trio_sync.files import _bulk
from trio_sync.files._bulk import BulkRunner, bulk_runner

from ..conftest import WAIT


async def test_runs_in_another_thread_and_returns_or_raises() -> None:
    runner = BulkRunner(threads=2)
    assert await runner(lambda a, b: (a + b, threading.get_ident()), 2, 3) != (
        5,
        threading.get_ident(),
    )
    value, ident = await runner(lambda: (7, threading.get_ident()))
    assert value == 7 and ident != threading.get_ident()
    with pytest.raises(KeyError, match="gone"):
        await runner(lambda: {}["gone"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_its_threads_run_at_a_lower_priority() -> None:
    runner = BulkRunner(threads=1, nice=5)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = await runner(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert niceness == min(19, base + 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process itself is untouched


async def test_a_cancelled_call_still_finishes_its_work() -> None:
    runner = BulkRunner(threads=1)
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def write() -> None:
        started.set()
        release.wait()
        done.append(1)

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner, write)
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()
            release.set()
    assert done == [1]  # the write was waited for, not abandoned


async def test_a_stoppable_call_is_asked_to_stop_when_its_caller_is_cancelled() -> None:
    # Tried: cancel the caller of a long copy in a bulk thread. The thread could not be
    # told: the cancellation took effect once the whole copy had run (6 s for 1.5 GB).
    # Now the work is handed a ``stop`` event, set at the cancellation; the call still
    # waits for the thread (never abandoned), which stops at its next check.
    runner = BulkRunner(threads=1)
    started, saw_stop = threading.Event(), threading.Event()

    def copy(*, stop: threading.Event) -> None:
        started.set()
        if stop.wait(WAIT):  # a block at a time, checking between them
            saw_stop.set()
        _bulk.check_stop(stop)

    with trio.fail_after(WAIT), trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.stoppable, copy)
            await trio.to_thread.run_sync(started.wait)
            scope.cancel()
    assert scope.cancelled_caught and saw_stop.is_set()
    # Not cancelled: the work runs to its end and its result comes back.
    assert await runner.stoppable(lambda value, *, stop: (value, stop.is_set()), 7) == (7, False)
    assert _bulk.stoppable_bulk(in_worker_thread) == _bulk.BULK.stoppable
    assert _bulk.stoppable_bulk(inline) is inline  # the simulator's copy is not interrupted


def test_only_the_default_worker_thread_is_replaced() -> None:
    assert isinstance(bulk_runner(in_worker_thread), BulkRunner)
    assert bulk_runner(inline) is inline  # the simulator stays deterministic
