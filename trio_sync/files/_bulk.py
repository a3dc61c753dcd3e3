"""Where bulk blob work runs: worker threads the OS schedules after everything else.

A transfer's chunks cost CPU (SHA-256) and disk (reads, writes, the fsync that publishes a
blob) for seconds at a time; an event's durable commit costs a few milliseconds, in a
worker thread too. On a busy machine, each of those threads waits for a core, and the
event sync's waits grow with every busy blob thread. So blob work gets its own threads at
a lower priority (``nice`` :data:`BULK_NICE`, per thread on Linux): when the cores are
contended, the kernel runs the event sync's threads first, and when they are idle the
transfers have them all.

Only production uses these threads: a store runner that is not the default worker thread
(the simulator's ``inline``, a test's own) is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from .._store_runner import StoreRunner, in_worker_thread

T = TypeVar("T")

#: How much lower than the process the bulk threads run (0-19; 10 gives them about a
#: tenth of the CPU share of a normal thread when both want a core).
BULK_NICE = 10
#: Bulk threads per process: enough for the default 2 uploads and 2 downloads of a
#: client at once; a server's sessions beyond that wait their turn in the queue.
BULK_THREADS = 4

_Job = Callable[[], None]


def _lower_priority(nice: int) -> None:
    # Linux: a thread is a process to setpriority, so this renices only this thread.
    # Elsewhere the call renices the whole process or does not exist: then skip it.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class BulkRunner:
    """A small pool of low-priority threads; ``await runner(fn, *args)`` runs ``fn`` in one
    and returns its result (a :data:`~trio_sync._store_runner.StoreRunner`)."""

    def __init__(self, *, threads: int = BULK_THREADS, nice: int = BULK_NICE) -> None:
        self._size = threads
        self._nice = nice
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    def _ensure_threads(self) -> None:
        with self._lock:
            while self._started < self._size:
                self._started += 1
                name = f"trio_sync bulk {self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        _lower_priority(self._nice)
        while True:
            self._jobs.get()()

    async def __call__(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Runs ``fn(*args)`` in a bulk thread. Like a store call, it is not abandoned on
        cancellation (a write finishes; the cancellation lands right after)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ensure_threads()
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def job() -> None:
            result = outcome.capture(fn, *args)
            # The run cannot end meanwhile: its task waits for this very call.
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.FAILED

        value: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return value


#: The process's bulk threads (started on first use).
BULK = BulkRunner()


def bulk_runner(run_store: StoreRunner) -> StoreRunner:
    """The runner for blob work next to ``run_store``: the bulk threads when store calls
    go to the default worker thread, ``run_store`` itself otherwise (the simulator's
    inline runner keeps runs deterministic)."""
    return BULK if run_store is in_worker_thread else run_store
