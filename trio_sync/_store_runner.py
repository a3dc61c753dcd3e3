"""Where store calls run: a worker thread in production, inline in the simulator.

The stores are synchronous. In production an fsync must not block the event loop, so calls
go to a worker thread (and are not abandoned on cancellation: a durable write finishes).
Under the simulator's MockClock with autojump a thread breaks determinism (the clock jumps
while the thread works), so the simulator runs them inline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class StoreRunner(Protocol):
    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


async def in_worker_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """Runs a store call in a worker thread; cancellation waits for it to finish."""
    return await trio.to_thread.run_sync(fn, *args)


async def inline(fn: Callable[..., T], /, *args: Any) -> T:
    """Runs a store call right here (deterministic; used by the simulator).

    A cancellation point like a real call (a simulated crash can land before the write),
    but it does not yield to the scheduler: a store call in memory takes no time.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    return fn(*args)
