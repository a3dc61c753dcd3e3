"""Unwrapping exception groups at the public boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

from ._errors import TrioSyncError


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


@contextlib.contextmanager
def single_exception() -> Iterator[None]:
    """Re-raises a group holding one real exception (Cancelled aside) as that exception.

    A context manager that owns a nursery would otherwise hand its users an
    ExceptionGroup for an ordinary error raised in their own ``async with`` body. When
    several tasks fail with trio_sync errors at once (a reader and a writer both seeing the
    connection close), they describe one failure: the first is raised.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        real = [exc for exc in leaves if not isinstance(exc, trio.Cancelled)]
        chosen = real if real else leaves
        if len(chosen) == 1 or all(isinstance(exc, TrioSyncError) for exc in chosen):
            raise chosen[0] from group.__cause__
        raise
