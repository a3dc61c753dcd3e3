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

A thread's work is never abandoned, but a long copy can be asked to stop: run through
:meth:`BulkRunner.stoppable`, it is handed a ``stop`` event that is set when its caller is
cancelled, checks it between blocks, and raises :class:`Stopped`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import outcome
import trio

from .._errors import StoreError
from .._store_runner import StoreRunner, in_worker_thread

T = TypeVar("T")

#: How much lower than the process the bulk threads run (0-19; 10 gives them about a
#: tenth of the CPU share of a normal thread when both want a core).
BULK_NICE = 10
#: Bulk threads per process: enough for the default 2 uploads and 2 downloads of a
#: client at once; a server's sessions beyond that wait their turn in the queue.
BULK_THREADS = 4

_Job = Callable[[], None]


class Stopped(Exception):
    """Raised in a bulk thread by work that saw its ``stop`` event set (its caller was
    cancelled): it gave up part way and left nothing behind."""


def check_stop(stop: threading.Event | None) -> None:
    """Raises :class:`Stopped` if ``stop`` is set (call it between blocks of work).

    Raises:
        Stopped: ``stop`` is set.
    """
    if stop is not None and stop.is_set():
        raise Stopped


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
        return await self._run(fn, args, None)

    async def stoppable(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Runs ``fn(*args, stop=event)`` in a bulk thread, and sets ``event`` as soon as
        the caller is cancelled; ``fn`` checks it between blocks (:func:`check_stop`) and
        raises :class:`Stopped`. The thread is still waited for, never abandoned, but a
        cancellation takes effect within a block instead of at the end of the work.

        Raises:
            trio.Cancelled: The caller was cancelled (``fn`` stopped, or had finished).
            StoreError: ``fn`` stopped, yet the cancellation that asked it to is gone (its
                deadline moved back meanwhile): the work was not done.
        """
        stop = threading.Event()
        try:
            return await self._run(partial(fn, stop=stop), args, stop)
        except Stopped:
            await trio.lowlevel.checkpoint()  # the cancellation that set ``stop`` lands here
            raise StoreError("the copy stopped: its caller was cancelled") from None

    async def _run(
        self, fn: Callable[..., T], args: tuple[Any, ...], stop: threading.Event | None
    ) -> T:
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
            # Never abandoned (the thread may be writing); asked to stop early instead.
            if stop is not None:
                stop.set()
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


def stoppable_bulk(run_store: StoreRunner) -> StoreRunner:
    """Like :func:`bulk_runner`, for work that takes a ``stop`` keyword (a blob store's
    ``put``): in the bulk threads, ``stop`` is set when the caller is cancelled (see
    :meth:`BulkRunner.stoppable`); any other runner calls ``fn`` without it (inline, the
    work cannot be interrupted anyway)."""
    return BULK.stoppable if run_store is in_worker_thread else run_store
