"""The transfer executor's runtime (``files/_executor.py``) on a stand-in client: how its
workers wait and what wakes them. Its decisions are tested in ``test_queue.py``; transfers
over a real server in the ``test_files_*`` modules."""

from __future__ import annotations

from typing import Any, cast

import attrs
import trio
import trio.testing

from trio_sync._broadcast import Broadcast
from trio_sync.files._executor import TransferExecutor
from trio_sync.files._model import Direction
from trio_sync.files._state import TransferStateStore
from trio_sync.files._wire import BlobClient


@attrs.define
class _StandInCore:
    """What the executor reads of a client: its phase and its signals."""

    phase: str = "connected"
    phase_changed: Broadcast = attrs.field(factory=Broadcast)
    changed: Broadcast = attrs.field(factory=Broadcast)
    file_transfers: object = None

    def trace(self, what: str, **details: object) -> None:
        pass

    def notify(self, kind: str, **fields: object) -> None:
        pass


class _NoRows:
    """A transfer-state store with no rows: every transfer picked has nothing to move."""

    failed_uploads: dict[str, object] = {}

    def get(self, file_id: str, direction: Direction) -> None:
        return None


async def _nothing_left(*args: object) -> None:
    pass


def _executor(core: _StandInCore) -> TransferExecutor:
    return TransferExecutor(
        cast(Any, core),
        cast(TransferStateStore, _NoRows()),
        cast(BlobClient, None),
        target=lambda direction, file_id: None,
        finished=_nothing_left,
    )


async def test_workers_that_saw_the_client_offline_wake_when_it_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried: the workers look for work while the client is offline (they wait, with no
    # deadline), and it is online again before the executor's watch of the connection
    # ran in between (it had never seen the client offline). Before, that watch passed on
    # a change only when it differed from the last one it saw: nothing woke the workers,
    # and the transfer waited until the heartbeat found the queue stuck.
    core = _StandInCore()
    executor = _executor(core)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        await trio.testing.wait_all_tasks_blocked()  # every task waits, online
        core.phase = "reconnecting"  # as the workers see it; the watch does not run
        executor.enqueue("upload", "f1")
        await trio.testing.wait_all_tasks_blocked()
        assert executor.queues["upload"].queued == 1  # seen offline: not started

        core.phase = "connected"
        core.phase_changed.notify()
        with trio.fail_after(5):
            while executor.queues["upload"].queued or not executor.is_idle():
                await executor.changed.event.wait()
        assert trio.current_time() == 0.0  # at once, not at a heartbeat
        nursery.cancel_scope.cancel()
