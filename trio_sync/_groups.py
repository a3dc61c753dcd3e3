"""Exception groups and chains: unwrapped at the public boundary, and let go of once
handled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import FrameType

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
    """Re-raises a group holding one real exception (Cancelled aside) as that exception,
    and a group holding a KeyboardInterrupt as the interrupt.

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
        for exc in real:
            # Ctrl-C lands in whichever task runs when the signal comes (a WebSocket's
            # reader, say), and the connection then fails beside it: what the user asked
            # for is the interrupt. Whatever else failed stays in its traceback.
            if isinstance(exc, KeyboardInterrupt):
                raise exc from (group if len(real) > 1 else group.__cause__)
        chosen = real if real else leaves
        if len(chosen) == 1 or all(isinstance(exc, TrioSyncError) for exc in chosen):
            raise chosen[0] from group.__cause__
        raise


def release_frames(exc: BaseException) -> None:
    """Lets go of the frames that a handled exception, its chain and its group's members
    keep, by dropping their tracebacks (and the chains between them).

    An exception caught in a frame that its traceback passes through makes a reference
    cycle (the frame holds the exception, the exception holds the frame), and so does a
    group whose members' context is the group. Everything those frames hold (a
    connection, its pages, its cancel scopes) then waits for a full run of the cycle
    collector instead of being freed at once. Call this when ``exc`` has been logged and
    will not be raised again.

    The frames themselves are not cleared: one of them may belong to a task that is
    still alive (an error handed over from another task), and clearing a suspended
    coroutine's frame would end that coroutine.
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            # A frame's locals may hold other exceptions, for instance the whole group a
            # nursery raised, whose Cancelled members were split off as it was caught.
            stack.extend(_exceptions_in(tb.tb_frame))
            tb = tb.tb_next
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        current.__traceback__ = None
        current.__cause__ = current.__context__ = None


#: Lists and tuples in a frame's locals longer than this are not searched for exceptions
#: (those that matter hold a group's members; a frame may hold a page of events).
_SEARCHED_SEQUENCE = 100


def _exceptions_in(frame: FrameType) -> list[BaseException]:
    found: list[BaseException] = []
    for value in frame.f_locals.values():
        if isinstance(value, BaseException):
            found.append(value)
        elif isinstance(value, (list, tuple)) and len(value) <= _SEARCHED_SEQUENCE:
            found.extend(item for item in value if isinstance(item, BaseException))
    return found
