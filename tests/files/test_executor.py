"""The transfer executor's runtime (``files/_executor.py``) on a stand-in client: how its
workers wait and what wakes them. Its decisions are tested in ``test_queue.py``; transfers
over a real server in the ``test_files_*`` modules."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import attrs
import trio
import trio.testing

from trio_sync._broadcast import Broadcast
from trio_sync.files._executor import TransferExecutor
from trio_sync.files._model import Direction, TransferState
from trio_sync.files._state import TransferStateStore
from trio_sync.files._wire import BlobClient, TransferFailed


@attrs.define
class _StandInCore:
    """What the executor reads of a client: its phase and its signals."""

    phase: str = "connected"
    phase_changed: Broadcast = attrs.field(factory=Broadcast)
    changed: Broadcast = attrs.field(factory=Broadcast)
    file_transfers: object = None
    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    #: Seconds a transfer's "in_progress" report waits (its thread losing the race for
    #: the store's write lock).
    report_delay: float = 0.0

    async def run_store(self, fn: Any, *args: Any) -> Any:
        if self.report_delay and args and getattr(args[-1], "status", None) == "in_progress":
            await trio.sleep(self.report_delay)
        return fn(*args)

    def trace(self, what: str, **details: object) -> None:
        pass

    def notify(self, kind: str, **fields: object) -> None:
        pass


async def _nothing_left(*args: object) -> None:
    pass


class _Rows:
    """A transfer-state store in memory."""

    failed_uploads: dict[str, object] = {}
    failed_downloads: dict[str, object] = {}

    def __init__(self) -> None:
        self.rows: dict[tuple[str, Direction], TransferState] = {}

    def get(self, file_id: str, direction: Direction) -> TransferState | None:
        return self.rows.get((file_id, direction))

    def update_from(
        self, key: tuple[str, Direction], seen: TransferState, state: TransferState
    ) -> bool:
        return self.rows.get(key) == seen and self.update(key, state)

    def update(self, key: tuple[str, Direction], state: TransferState) -> bool:
        current = self.rows.get(key)
        if current is None or current.content_hash != state.content_hash:
            return False  # as TransferStateStore.update: only for the same contents
        self.rows[key] = state
        return True


class _Wire:
    """A blob client whose transfers take ``takes[hash]`` seconds (5 by default), whose
    connections take ``close_takes`` seconds to close (``closing`` is set as one
    starts to), and whose first transfer drops mid-stream if ``drops_first``."""

    def __init__(
        self,
        close_takes: float = 0.0,
        takes: dict[str, float] | None = None,
        *,
        drops_first: bool = False,
    ) -> None:
        self.close_takes = close_takes
        self.takes = takes or {}
        self.drops_first = drops_first
        self.closing = trio.Event()
        self.started: list[tuple[str, float]] = []

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[object]:
        yield object()
        self.closing.set()
        with trio.CancelScope(shield=True):
            await trio.sleep(self.close_takes)

    async def holds(self, content_hash: str) -> bool:
        return False

    async def _move(self, content_hash: str, size: int) -> int:
        self.started.append((content_hash, trio.current_time()))
        if self.drops_first and len(self.started) == 1:
            raise TransferFailed("the connection dropped mid-stream", connection_lost=True)
        await trio.sleep(self.takes.get(content_hash, 5.0))
        return size

    async def download(self, content_hash: str, size: int, *args: object) -> int:
        return await self._move(content_hash, size)

    async def upload(self, content_hash: str, size: int, *args: object) -> None:
        await self._move(content_hash, size)


def _on(
    rows: _Rows,
    wire: _Wire,
    core: _StandInCore | None = None,
    finished: Any = _nothing_left,
    **options: Any,
) -> TransferExecutor:
    """An executor over ``rows`` and ``wire``: a transfer moves its row's contents until
    the row says "done"."""

    def target(direction: Direction, file_id: str) -> tuple[str, int] | None:
        row = rows.get(file_id, direction)
        return None if row is None or row.status == "done" else (row.content_hash, 10)

    return TransferExecutor(
        cast(Any, core or _StandInCore()),
        cast(TransferStateStore, rows),
        cast(BlobClient, wire),
        target=target,
        finished=finished,
        **options,
    )


async def _until_idle(executor: TransferExecutor) -> None:
    with trio.fail_after(300):
        while not executor.is_idle():
            await executor.changed.event.wait()


async def test_workers_that_saw_the_client_offline_wake_when_it_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried: the workers look for work while the client is offline (they wait, with no
    # deadline), and it is online again before the executor's watch of the connection
    # ran in between (it had never seen the client offline). Before, that watch passed on
    # a change only when it differed from the last one it saw: nothing woke the workers,
    # and the transfer waited until the heartbeat found the queue stuck.
    core = _StandInCore()
    executor = _on(_Rows(), _Wire(), core)  # no rows: a transfer picked has nothing to move
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


async def test_new_contents_queued_while_a_failed_transfer_closes_start_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried: a download fails in a way that closes its connection (a drop mid-stream),
    # and while the connection closes (slowly) the file gets new contents: the fold
    # cancels the transfer, writes the new row and queues it. Before, the cancel that
    # came during the close went unseen: the worker counted the failure against the key
    # and put it back to wait out a backoff, and the new contents, queued over it, waited
    # that backoff with the old failures (a helper session's run saw 30 s with every
    # worker idle after 7 such updates; 60 s, the cap, after 9).
    rows = _Rows()
    wire = _Wire(close_takes=1.0, takes={"new": 0.0}, drops_first=True)
    key = ("f1", "download")
    #: The fold's row write, still on its way to the store when the worker ends.
    landing: list[TransferState] = []

    async def finished(direction: Direction, file_id: str, content_hash: str) -> None:
        # Lands right after the worker wrote its outcome; then the fold queues it.
        while landing:
            rows.rows[key] = landing.pop()
            executor.enqueue("download", "f1")

    executor = _on(rows, wire, finished=finished)
    rows.rows[key] = TransferState("queued", "old")
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        executor.enqueue("download", "f1")
        await wire.closing.wait()  # the first attempt failed; its connection closes
        # What the fold does for new contents (Reconciler.want_downloads): stop the
        # transfer, write the new row (it lands later), queue the download.
        executor.cancel("download", "f1")
        landing.append(TransferState("queued", "new"))
        with trio.fail_after(30):
            while rows.rows[key] != TransferState("done", "new"):
                await executor.changed.event.wait()
        # Started as soon as the worker was free (the close ended), with no backoff.
        assert wire.started == [("old", 0.0), ("new", 1.0)]
        nursery.cancel_scope.cancel()


async def test_a_read_asked_while_the_old_download_stops_keeps_its_priority(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried: one download worker, four files queued; f1 has new contents while its old
    # ones download (closing that connection takes 1 s), and the application reads f1 at
    # once (a priority request). Before, the request reached the old transfer still in
    # flight, which took the priority with it when it ended: f1's new contents were
    # queued again without it, behind every other download (started at 16.5 s).
    rows = _Rows()
    wire = _Wire(close_takes=1.0, takes={"f1-old": 100.0})
    executor = _on(rows, wire, downloads=1)
    for name in ("f1", "f2", "f3", "f4"):
        rows.rows[(name, "download")] = TransferState("queued", f"{name}-old")
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        for name in ("f1", "f2", "f3", "f4"):
            executor.enqueue("download", name)
        await trio.sleep(0.5)  # f1's old contents are moving
        # The fold (Reconciler.want_downloads): stop, write the new row, queue; then the
        # application's read() asks for the same with priority.
        executor.cancel("download", "f1")
        rows.rows[("f1", "download")] = TransferState("queued", "f1-new")
        executor.enqueue("download", "f1")
        executor.enqueue("download", "f1", priority=True)
        await _until_idle(executor)
        nursery.cancel_scope.cancel()
    # Next as soon as the stopped transfer's connection closed, ahead of f2, f3, f4.
    assert wire.started[:2] == [("f1-old", 0.0), ("f1-new", 1.5)]


async def test_an_upload_stopped_for_a_deleted_file_is_not_started_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried: a file is deleted while its upload runs; the reconcile stops the upload and
    # only later (after another store call) deletes its rows. Before, the stopped
    # worker, finding its own "in_progress" row, put it back to "queued" (as if whoever
    # stopped it wanted those contents again) and queued it: the deleted file's contents
    # were uploaded again from the start, and wait_idle() waited for that.
    rows = _Rows()
    wire = _Wire()
    executor = _on(rows, wire)
    key = ("f1", "upload")
    rows.rows[key] = TransferState("queued", "h")
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        executor.enqueue("upload", "f1")
        await trio.sleep(1)  # uploading
        executor.cancel("upload", "f1")  # Reconciler.reconcile, for a deleted file
        await trio.sleep(0.05)  # its next store call, then the rows go
        del rows.rows[key]
        await _until_idle(executor)
        nursery.cancel_scope.cancel()
    assert wire.started == [("h", 0.0)]
    assert trio.current_time() < 2


async def test_a_stop_that_decided_done_is_not_undone_by_the_stopped_transfers_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Tried (found by a helper's review): a download starts, and its "in_progress"
    # report is on its way to the store (its thread loses the race for the write lock)
    # when the reconcile, finding the contents held here already, stops it and writes
    # "done". The report landed over "done"; the stopped transfer then put its
    # "in_progress" back to "queued", with nothing queued: the row said "queued" for
    # ever, for contents held here.
    rows = _Rows()
    wire = _Wire()
    executor = _on(rows, wire, _StandInCore(report_delay=0.1))
    key = ("f1", "download")
    rows.rows[key] = TransferState("queued", "h")
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        executor.enqueue("download", "f1")
        await trio.sleep(0.05)  # started; its report is on its way
        # Reconciler.downloads_done_for_held: stop the transfer, write "done".
        executor.cancel("download", "f1")
        rows.rows[key] = TransferState("done", "h")
        await _until_idle(executor)
        nursery.cancel_scope.cancel()
    assert rows.rows[key] == TransferState("done", "h")
    assert wire.started == []
