"""Invariants: plain functions of the world that raise when the state is wrong. The
simulator calls them between steps, where nothing can be awaited, so an ``async def`` one
is refused before the run and one that returns an awaitable fails it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._world import World

Invariant = Callable[["World"], object]


def call_invariant(invariant: Invariant, world: World) -> None:
    """Calls an invariant, which must check synchronously.

    Raises:
        TypeError: It returned an awaitable (an ``async def``, say): its checks never ran,
            and a run must not pass on checks that never ran.
        Exception: Whatever the invariant raises.
    """
    result = invariant(world)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited, on purpose: no "never awaited" warning
        raise TypeError(
            f"the invariant {invariant!r} returned an awaitable instead of checking: an "
            "invariant is a plain function (def, not async def)"
        )


def refuse_async_invariant(name: str, invariant: Invariant | None) -> None:
    """Refuses an ``async def`` invariant before the run (it could never be awaited).

    Raises:
        TypeError: ``invariant`` is a coroutine function.
    """
    if invariant is not None and inspect.iscoroutinefunction(invariant):
        raise TypeError(
            f"{name} {getattr(invariant, '__qualname__', invariant)!r} is an async "
            "function: an invariant is a plain function (def, not async def) that raises "
            "when the state is wrong; it runs between steps, where nothing can be awaited"
        )
