"""The bulk threads: blob work off the event loop, at a lower priority, never abandoned."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import trio

from trio_sync._store_runner import in_worker_thread, inline
from trio_sync.files._bulk import BulkRunner, bulk_runner


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


def test_only_the_default_worker_thread_is_replaced() -> None:
    assert isinstance(bulk_runner(in_worker_thread), BulkRunner)
    assert bulk_runner(inline) is inline  # the simulator stays deterministic
