"""Exception groups at the boundary: one failure raised as itself, and a handled one let go
of without harming the tasks its traceback passed through."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sync import ConnectionClosed
from trio_sync._groups import release_frames, single_exception

from .conftest import cyclic_garbage_of


class Payload:
    """Stands for what a session's frames hold (a connection, its pages)."""


async def fail_beside_two_waiters() -> None:
    payload = Payload()  # noqa: F841  (held by this frame, as a session holds its state)
    with single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
            await trio.lowlevel.checkpoint()
            raise ConnectionClosed("gone")


async def fail_together(*errors: BaseException) -> None:
    """Each error raised by a task of one nursery, all woken at once (so that none is
    cancelled by the first one's failure before it raises)."""
    go = trio.Event()

    async def fail(error: BaseException) -> None:
        await go.wait()
        raise error

    async with trio.open_nursery() as nursery:
        for error in errors:
            nursery.start_soon(fail, error)
        await trio.testing.wait_all_tasks_blocked()
        go.set()


async def test_single_exception_raises_the_one_real_failure() -> None:
    with pytest.raises(ConnectionClosed, match="gone"):
        await fail_beside_two_waiters()


async def test_a_ctrl_c_beside_a_failure_is_raised_as_itself() -> None:
    # What was tried (a review's finding): Ctrl-C landing in a WebSocket's reader task
    # while the read loop beside it fails with ConnectionClosed. open_client raised a
    # group of both (the process died with a traceback, not as interrupted); the
    # interrupt is what the user asked for.
    with pytest.raises(KeyboardInterrupt), single_exception():
        await fail_together(KeyboardInterrupt(), ConnectionClosed("connection closed"))


async def test_a_failure_beside_a_ctrl_c_stays_in_its_traceback() -> None:
    # What was tried (a review's finding): a RuntimeError in one task as Ctrl-C lands in
    # another: the interrupt is raised, caused by the group that holds the error (it was
    # hidden).
    with pytest.raises(KeyboardInterrupt) as caught, single_exception():
        await fail_together(KeyboardInterrupt(), RuntimeError("a bug beside it"))
    cause = caught.value.__cause__
    assert isinstance(cause, BaseExceptionGroup)
    assert any(isinstance(exc, RuntimeError) for exc in cause.exceptions)


@pytest.mark.parametrize("release", [False, True])
async def test_a_released_failure_leaves_no_cycle_holding_its_frames(
    collector_off: None, release: bool
) -> None:
    try:
        await fail_beside_two_waiters()
    except ConnectionClosed as exc:
        if release:
            release_frames(exc)
    # Without release_frames the frame (and its payload) is only freed by the collector:
    # the exception that went through it is held by a frame of its own traceback.
    assert cyclic_garbage_of(Payload) == (0 if release else 1)


async def test_release_frames_leaves_a_live_task_that_raised_alone() -> None:
    # An error handed over from a task that goes on (as the hub's writer hands a store
    # error to the sessions waiting for it): its traceback holds that task's frame.
    handed_over: list[BaseException] = []
    resumed = trio.Event()
    done = trio.Event()

    async def worker() -> None:
        try:
            raise ConnectionClosed("a failure others are told about")
        except ConnectionClosed as exc:
            handed_over.append(exc)
        await resumed.wait()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        await trio.testing.wait_all_tasks_blocked()
        release_frames(handed_over[0])
        assert handed_over[0].__traceback__ is None
        resumed.set()
        with trio.fail_after(5):
            await done.wait()
