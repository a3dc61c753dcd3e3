"""What makes a simulated run a pure function of its seed, beyond the simulator's own code.

Two process-wide pieces of Trio are involved, and both are changed only for the thread that
runs a simulation, so a Trio program running in another thread at the same time (or a
second simulation there) is not disturbed:

- Trio's scheduler shuffles each batch of runnable tasks with a private random source.
  As in Trio's own Hypothesis integration, the batch is sorted by task creation order and
  then shuffled; here the source is replaced by a stand-in that hands each thread running
  a simulation its own seeded ``random.Random`` and every other thread the original.
- A worker thread runs outside virtual time: MockClock's autojump fires while it works, so
  whatever the thread does lands at a moment the seed does not decide. Starting one from a
  simulation raises :class:`SimulationError` instead of silently giving another trace.

Everything is put back when the last simulation in the process ends, even on failure.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
import trio.lowlevel

from .._errors import TrioSyncError


class SimulationError(TrioSyncError):
    """The simulator was used in a way that would break determinism (or its rules)."""


_THREADS_REFUSED = (
    "{what} was called inside a simulation. A worker thread runs outside the simulator's "
    "virtual time (MockClock's autojump fires while it works), so the run would no longer "
    "replay from its seed. Do the work inline instead: the simulator's stores are in memory "
    "and world.open_client() already runs them inline (run_store=inline); keep blocking I/O "
    "out of the workload, or do it before or after run_simulation()."
)

_state = threading.local()
_install_lock = threading.Lock()
_installed = 0
_saved: dict[str, Any] = {}


def _simulating() -> bool:
    return getattr(_state, "seed", None) is not None


class _PerThreadScheduler:
    """Stands in for Trio's scheduler random source: seeded in simulating threads."""

    def __init__(self, original: random.Random) -> None:
        self.original = original

    def _source(self) -> random.Random:
        source: random.Random | None = getattr(_state, "scheduler", None)
        return source if source is not None else self.original

    # The two calls Trio's scheduler makes on every batch, spelled out (they are hot).
    def shuffle(self, batch: list[Any]) -> None:
        # A batch of one task (most of them) or none: random.shuffle would draw nothing.
        if len(batch) > 1:
            self._source().shuffle(batch)

    def random(self) -> float:
        return self._source().random()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source(), name)


def _refuse_in_simulation(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def guard(*args: Any, **kwargs: Any) -> Any:
        if _simulating():
            raise SimulationError(_THREADS_REFUSED.format(what=what))
        return original(*args, **kwargs)

    return guard


def _refuse_async_in_simulation(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def guard(*args: Any, **kwargs: Any) -> Any:
        if _simulating():
            raise SimulationError(_THREADS_REFUSED.format(what=what))
        return await original(*args, **kwargs)

    return guard


def _install() -> None:
    """Puts the per-thread scheduler source and the thread guards in place."""
    from trio import _threads
    from trio._core import _run as trio_run

    _saved["flag"] = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    _saved["source"] = trio_run._r
    _saved["to_thread"] = trio.to_thread.run_sync
    _saved["lowlevel"] = trio.lowlevel.start_thread_soon
    # The name to_thread.run_sync calls: it also catches code that imported run_sync
    # before the simulation started (trio.Path, trio.open_file, getaddrinfo).
    _saved["threads"] = getattr(_threads, "start_thread_soon", None)

    # setattr: these are Trio's module attributes, replaced on purpose for a while.
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010
    setattr(trio_run, "_r", _PerThreadScheduler(_saved["source"]))  # noqa: B010
    setattr(  # noqa: B010
        trio.to_thread,
        "run_sync",
        _refuse_async_in_simulation("trio.to_thread.run_sync", _saved["to_thread"]),
    )
    setattr(  # noqa: B010
        trio.lowlevel,
        "start_thread_soon",
        _refuse_in_simulation("trio.lowlevel.start_thread_soon", _saved["lowlevel"]),
    )
    if _saved["threads"] is not None:
        setattr(  # noqa: B010
            _threads,
            "start_thread_soon",
            _refuse_in_simulation("trio.to_thread.run_sync", _saved["threads"]),
        )


def _uninstall() -> None:
    from trio import _threads
    from trio._core import _run as trio_run

    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", _saved["flag"])  # noqa: B010
    setattr(trio_run, "_r", _saved["source"])  # noqa: B010
    setattr(trio.to_thread, "run_sync", _saved["to_thread"])  # noqa: B010
    setattr(trio.lowlevel, "start_thread_soon", _saved["lowlevel"])  # noqa: B010
    if _saved["threads"] is not None:
        setattr(_threads, "start_thread_soon", _saved["threads"])  # noqa: B010
    _saved.clear()


@contextmanager
def simulation_sandbox(seed: int) -> Iterator[None]:
    """For the duration, in this thread: Trio's scheduling order is a function of
    ``seed``, and starting a worker thread raises :class:`SimulationError`.

    Other threads keep Trio's usual behaviour. Nested use in one thread is refused.

    Raises:
        SimulationError: A simulation is already running in this thread.
    """
    global _installed
    if _simulating():
        raise SimulationError(
            "a simulation is already running in this thread (run_simulation and "
            "run_scenario call trio.run themselves: call them from ordinary code)"
        )
    with _install_lock:
        if _installed == 0:
            _install()
        _installed += 1
    _state.seed = seed
    _state.scheduler = random.Random(f"trio_sync:{seed}")
    try:
        yield
    finally:
        _state.seed = None
        _state.scheduler = None
        with _install_lock:
            _installed -= 1
            if _installed == 0:
                _uninstall()


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Makes Trio's scheduling order a function of ``seed`` for the duration.

    Trio shuffles each batch of runnable tasks. Its Hypothesis integration makes that
    reproducible by sorting the batch by task creation order before a shuffle drawn from
    Trio's private random source; this does the same with a source seeded from ``seed``
    (for this thread only), refuses worker threads, and restores everything after.
    """
    with simulation_sandbox(seed):
        yield
