"""The transfer executor: upload and download workers over two bounded queues.

The executor's nursery owns its workers. A worker that dies (a bug, an injected fault)
leaves its transfer queued again and its slot empty; :meth:`TransferExecutor.ensure_workers`
starts a new worker in every empty slot, and the heartbeat calls it when it sees a stuck
queue (see :meth:`TransferExecutor.heartbeat_check`). Decisions (order, backoff, stuck
detection, progress throttling) are the pure classes of ``_queue.py``.

Every status change of a transfer is written to the local transfer state (durable, never
synced) before it is announced; progress is only announced (ephemeral).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from .._broadcast import Broadcast
from .._errors import StoreError
from ..client._core import ClientCore
from ..protocol import FileTransfers
from ._model import Direction, TransferState, TransferStatus
from ._pacing import PacingPolicy, TransferPacer
from ._queue import (
    ProgressThrottle,
    RetryPolicy,
    StuckQueueWatch,
    TransferQueue,
    idle_connection_closes_at,
    keeps_connection,
    runs_again_on_new_connection,
)
from ._state import TransferStateStore
from ._wire import BlobClient, TransferFailed, WorkerConnection

logger = logging.getLogger("trio_sync.files")

DIRECTIONS: tuple[Direction, ...] = ("upload", "download")
#: What a transfer moves: (content hash, size), or None when it is not needed any more.
Target = Callable[[Direction, str], "tuple[str, int] | None"]
#: Called with (direction, file id, content hash) after a transfer attempt ended,
#: whatever the outcome (its connection closed, its last write done).
Finished = Callable[[Direction, str, str], Awaitable[None]]
#: The client that owes the upload of a file's current contents (their author), if known.
OwedBy = Callable[[str], "str | None"]
#: Called with (direction, file id) as a transfer starts: tests raise here to kill a worker.
FaultHook = Callable[[Direction, str], None]


@attrs.define
class _Cancel:
    """How :meth:`TransferExecutor.cancel` reaches a transfer in flight, at any point of
    it (writing its state, opening a connection, between two attempts): it is marked
    ``requested``, and the scope of the attempt running, if any, is cancelled."""

    requested: bool = False
    scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        self.requested = True
        if self.scope is not None:
            self.scope.cancel()


class EventSyncGate:
    """The client's event sync, as transfers see it (a ``SyncGate``): busy while it has
    work in flight (``ClientCore.sync_busy``)."""

    def __init__(self, core: ClientCore) -> None:
        self._core = core

    @property
    def busy(self) -> bool:
        return self._core.sync_busy

    async def wait_idle(self, deadline: float) -> None:
        core = self._core
        with trio.move_on_at(deadline):
            while True:
                changed = core.changed.event
                if not core.sync_busy:
                    return
                await changed.wait()


class TransferExecutor:
    """Runs uploads and downloads; see the module's description."""

    def __init__(
        self,
        core: ClientCore,
        states: TransferStateStore,
        wire: BlobClient,
        *,
        target: Target,
        finished: Finished,
        owed_by: OwedBy = lambda file_id: None,
        uploads: int = 2,
        downloads: int = 2,
        retry: RetryPolicy | None = None,
        progress_interval: float = 0.25,
        pacing: PacingPolicy | None = None,
        keep_connection: float = 2.0,
    ) -> None:
        retry = retry or RetryPolicy()
        self._core = core
        self._states = states
        self._wire = wire
        self._target = target
        self._finished = finished
        self._owed_by = owed_by
        self._progress_interval = progress_interval
        self._pacing = pacing
        self._keep_connection = keep_connection
        self.queues: dict[Direction, TransferQueue] = {
            "upload": TransferQueue(uploads, retry),
            "download": TransferQueue(downloads, retry),
        }
        self.changed = Broadcast()
        self.paused = False
        self.fault: FaultHook | None = None
        self._nursery: trio.Nursery | None = None
        self._alive: dict[tuple[Direction, int], bool] = {}
        self._cancels: dict[tuple[Direction, str], _Cancel] = {}
        self._left: dict[tuple[Direction, str], int] = {}
        #: New contents being recorded (rows written, event not yet committed): they
        #: count as uploads pending, since the transfer of what they replace was stopped.
        self.recording = 0
        #: Files whose reconcile failed (a full disk): each may owe an upload, so they
        #: count as uploads pending until a reconcile of them works (set by FileSync).
        self.unsettled = 0
        #: The contents each transfer in flight moves: (direction, file id) -> hash.
        self._moving: dict[tuple[Direction, str], str] = {}
        self._stuck = StuckQueueWatch()
        #: How many workers were started again after dying.
        self.restarts = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the workers until cancelled; ready once they are started."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.ensure_workers()
            nursery.start_soon(self._watch_connection)
            task_status.started()
            await trio.sleep_forever()

    def ensure_workers(self) -> int:
        """Starts a worker in every slot whose worker is missing or dead; returns how
        many were started. Idempotent."""
        assert self._nursery is not None, "the executor is not running"
        started = 0
        for direction in DIRECTIONS:
            for slot in range(self.queues[direction].concurrency):
                if not self._alive.get((direction, slot)):
                    self._alive[(direction, slot)] = True
                    self._nursery.start_soon(self._worker, direction, slot)
                    started += 1
        if started:
            self.changed.notify()
        return started

    def workers_alive(self, direction: Direction) -> int:
        return sum(1 for (d, _), alive in self._alive.items() if d == direction and alive)

    def pause(self) -> None:
        self.paused = True
        self.changed.notify()

    def resume(self) -> None:
        self.paused = False
        self.changed.notify()

    @property
    def online(self) -> bool:
        return self._core.phase == "connected"

    async def _watch_connection(self) -> None:
        # Workers wait on the executor's own changes; connectivity is the client's (woken
        # by phase changes only, not by every commit and ack). Every change is passed on:
        # a worker may have seen the client offline between two changes this task did
        # not run between (offline, then online again), and it waits with no deadline.
        core = self._core
        while True:
            await core.phase_changed.event.wait()
            self.changed.notify()

    # --- the queues -----------------------------------------------------------------------

    def enqueue(self, direction: Direction, file_id: str, *, priority: bool = False) -> None:
        if self.queues[direction].add(file_id, priority=priority):
            target = self._target(direction, file_id)
            if target is not None:
                self._left[(direction, file_id)] = target[1]
        self.counts_changed()

    def cancel(self, direction: Direction, file_id: str) -> None:
        """Drops the transfer: unqueued, and stopped if in flight, wherever it is (its
        file was deleted, or its contents changed: enqueue it again for the new
        contents). The caller decides what comes next: the rows it writes, and an
        :meth:`enqueue` after this call if the file is to move again (a stopped transfer
        is queued again only on such a request: see ``TransferQueue.asked_again``)."""
        self.queues[direction].discard(file_id)
        in_flight = self._cancels.get((direction, file_id))
        if in_flight is not None:
            in_flight.cancel()
        self._left.pop((direction, file_id), None)
        self.counts_changed()

    def moving(self, direction: Direction, content_hash: str) -> bool:
        """True while a transfer in flight moves ``content_hash`` in ``direction``."""
        return any(
            d == direction and moved == content_hash for (d, _), moved in self._moving.items()
        )

    def _held(self, direction: Direction) -> Callable[[str], bool] | None:
        """Which queued transfers wait for another: files with the same contents as one
        moving now share its blob (and, downloading, its one partial). When it ends, the
        others find the blob there (or the server holding it) and are done at once."""
        moving = {moved for (d, _), moved in self._moving.items() if d == direction}
        if not moving:
            return None

        def held(file_id: str) -> bool:
            # The row's contents, not _target()'s: that one stats the blob, and a pick
            # may ask about many queued files.
            row = self._states.get(file_id, direction)
            return row is not None and row.content_hash in moving

        return held

    def is_idle(self) -> bool:
        """Nothing queued or in flight, and no worker still finishing a transfer (writing
        its outcome, dropping a partial)."""
        return all(not q.queued and not q.busy for q in self.queues.values())

    def describe(self) -> dict[str, object]:
        """Everything that decides whether a transfer starts now, as plain data (for a
        person or a test report finding out why transfers do not move): online, paused,
        each direction's queue (:meth:`TransferQueue.describe`), workers alive, and the
        contents each transfer in flight moves."""
        now = trio.current_time()
        return {
            "online": self.online,
            "paused": self.paused,
            "recording": self.recording,
            "unsettled": self.unsettled,
            **{
                direction: {
                    **self.queues[direction].describe(now),
                    "workers_alive": self.workers_alive(direction),
                    "moving": {f: h for (d, f), h in self._moving.items() if d == direction},
                }
                for direction in DIRECTIONS
            },
        }

    def counts(self) -> FileTransfers:
        failed = self._states.failed_uploads
        waiting = self.queues["download"].waiting_uncounted
        owing = {self._owed_by(file_id) for file_id in waiting}
        return FileTransfers(
            uploads_failed=len(failed),
            upload_error=next(iter(failed.values())).last_error if failed else None,
            uploads_pending=self.queues["upload"].queued
            + self.queues["upload"].in_flight
            + self.recording
            + self.unsettled,
            downloads_pending=self.queues["download"].queued + self.queues["download"].in_flight,
            bytes_left=sum(self._left.values()),
            downloads_failed=len(self._states.failed_downloads),
            downloads_waiting_for_upload=len(waiting),
            waiting_for_uploads_from=tuple(sorted(who for who in owing if who is not None)),
        )

    def counts_changed(self) -> None:
        self.changed.notify()
        counts = self.counts()
        core = self._core
        if core.file_transfers != counts:
            core.file_transfers = counts
            core.changed.notify()
            if counts.uploads_pending == counts.downloads_pending == 0:
                core.trace("files.idle")

    # --- the heartbeat's check --------------------------------------------------------------

    async def heartbeat_check(self) -> None:
        """Runs on every heartbeat tick while connected: heals a stuck queue (items ready,
        nothing in flight, not paused, for 2 ticks) with :meth:`ensure_workers`."""
        now = trio.current_time()
        ready = sum(q.ready_count(now) for q in self.queues.values())
        in_flight = sum(q.in_flight for q in self.queues.values())
        if self._stuck.tick(
            ready=ready, in_flight=in_flight, online=self.online, paused=self.paused
        ):
            restarted = self.ensure_workers()
            self._core.trace("heartbeat.stuck_queue", ready=ready, restarted=restarted)
            self._core.notify(
                "heartbeat.recovery",
                reason="stuck-queue",
                detail=f"{ready} transfer(s) ready, none in flight",
                restarted_workers=restarted,
            )
            self.changed.notify()

    # --- workers ----------------------------------------------------------------------------

    async def _worker(self, direction: Direction, slot: int) -> None:
        try:
            await self._work(direction)
        except Exception as exc:
            # The slot stays empty until ensure_workers(); the transfer is queued again.
            logger.exception("a %s worker died", direction)
            self._core.trace("files.worker_died", direction=direction, error=repr(exc))
        finally:
            self._alive[(direction, slot)] = False

    async def _work(self, direction: Direction) -> None:
        queue = self.queues[direction]
        # Kept while transfers come back to back, and for keep_connection seconds once
        # there is nothing to do (the next save may come a moment later).
        connection = WorkerConnection(self._wire)
        idle_since: float | None = None
        try:
            while True:
                changed = self.changed.event
                now = trio.current_time()
                key = None
                held = self._held(direction)
                if self.online and not self.paused:
                    key = queue.next_ready(now, held=held)
                if key is None:
                    deadline = (
                        queue.next_deadline(held=held) if self.online and not self.paused else None
                    )
                    wake_at = float("inf") if deadline is None else deadline
                    if connection.is_open:
                        idle_since = now if idle_since is None else idle_since
                        close_at = idle_connection_closes_at(
                            idle_since, self._keep_connection, online=self.online
                        )
                        if now >= close_at:
                            await self._close(direction, connection, "idle")
                        else:
                            wake_at = min(wake_at, close_at)
                    with trio.move_on_at(wake_at):
                        await changed.wait()
                    continue
                idle_since = None
                queue.start(key)
                try:
                    await self._transfer(direction, key, connection)
                    # Asked for while this transfer ran (new contents, a read): queued
                    # now, before this one counts as ended, so nobody sees the queue idle
                    # in between (wait_idle() returned early). Only on a request, never
                    # from the rows: a transfer stopped because its file was deleted has
                    # an "in_progress" row put back to "queued" for a moment.
                    priority = queue.asked_again(key)
                    if priority is not None:
                        self.enqueue(direction, key, priority=priority)
                finally:
                    queue.released(key)  # still in flight: this worker died or was stopped
                    self.counts_changed()
                # A transfer can end without waiting for anything: let the others run.
                await trio.lowlevel.checkpoint()
        finally:
            await self._close(direction, connection, "worker stopped")

    async def _close(self, direction: Direction, connection: WorkerConnection, why: str) -> None:
        if connection.is_open:
            await connection.close()
            self._core.trace(f"{direction}.connection_closed", why=why)

    async def _set_state(
        self,
        direction: Direction,
        file_id: str,
        state: TransferState,
        seen: TransferState | None = None,
    ) -> None:
        """Writes ``state`` if the row is still for the same contents; given ``seen``,
        only if the row is still exactly that."""
        key = (file_id, direction)
        if seen is None:
            await self._core.run_store(self._states.update, key, state)
        else:
            await self._core.run_store(self._states.update_from, key, seen, state)

    async def _transfer(
        self, direction: Direction, file_id: str, connection: WorkerConnection
    ) -> None:
        core, queue = self._core, self.queues[direction]
        target = self._target(direction, file_id)
        row = self._states.get(file_id, direction)
        if target is None or row is None:
            queue.succeeded(file_id)  # nothing to do any more
            self._left.pop((direction, file_id), None)
            if direction == "upload" and row is not None and row.status != "done":
                # The local copy is gone (deleted by a person or a cleaner) before it
                # reached the server: nothing can upload it. Say so, or the row would
                # stay queued and be picked up again at once, for ever.
                await self._set_state(
                    direction,
                    file_id,
                    attrs.evolve(
                        row,
                        status="error",
                        last_error=(
                            f"the local copy of {row.content_hash[:16]}... is gone before "
                            "it was uploaded: save the file again"
                        ),
                    ),
                )
            return
        content_hash, size = target
        # Claimed before the first await: another worker looking for work meanwhile must
        # see these contents as moving, or two transfers would share one partial; and a
        # cancel() from here on reaches this transfer.
        self._moving[(direction, file_id)] = content_hash
        cancel = self._cancels[(direction, file_id)] = _Cancel()
        try:
            error, yielded = await self._move(
                direction, file_id, row, content_hash, size, connection, cancel
            )
            refused_at_begin = isinstance(error, TransferFailed) and error.connection_usable
            if not keeps_connection(
                cancelled=cancel.requested,
                failed=error is not None,
                refused_at_begin=refused_at_begin,
            ):
                # Here, outside the transfer's cancel scope (the connection owns a nursery).
                await self._close(direction, connection, "transfer failed")
            # Read only now: a cancel() while the connection closed (new contents, say)
            # must be seen, or the failure would be counted against the key and the new
            # contents, queued over it, would wait out its backoff with its failures.
            cancelled = cancel.requested
        finally:
            del self._moving[(direction, file_id)]
            del self._cancels[(direction, file_id)]
        if cancelled:
            # Cancelled on purpose (deleted, or new contents): whoever cancelled decides.
            queue.succeeded(file_id)
            # Its progress may have counted bytes again after cancel() forgot them.
            self._left.pop((direction, file_id), None)
            core.trace(f"{direction}.cancelled", file_id=file_id)
            current = self._states.get(file_id, direction)
            if (
                current is not None
                and current.content_hash == content_hash
                and current.status == "in_progress"
            ):
                # This transfer's own "in_progress" (written only over the row it read)
                # landed over the decision of whoever cancelled it, which was to move
                # these same contents again ("queued", the row it read): put that back;
                # that caller's enqueue() has the worker queue it (below, in _work).
                await self._set_state(direction, file_id, attrs.evolve(current, status="queued"))
            await self._finished(direction, file_id, content_hash)
            return
        current = self._states.get(file_id, direction)
        if current is None or current.content_hash != content_hash:
            queue.succeeded(file_id)  # superseded while it ran
            self._left.pop((direction, file_id), None)
            await self._finished(direction, file_id, content_hash)
            return
        if error is None:
            queue.succeeded(file_id)
            self._left.pop((direction, file_id), None)
            await self._set_state(
                direction, file_id, TransferState("done", content_hash, current.attempts)
            )
            core.notify(
                f"{direction}.complete",
                file_id=file_id,
                hash=content_hash,
                size=size,
                yielded=yielded,
            )
            core.trace(f"{direction}.complete", file_id=file_id, size=size, yielded=yielded)
        else:
            await self._failed(direction, file_id, current, error)
        await self._finished(direction, file_id, content_hash)

    async def _move(
        self,
        direction: Direction,
        file_id: str,
        row: TransferState,
        content_hash: str,
        size: int,
        connection: WorkerConnection,
        cancel: _Cancel,
    ) -> tuple[TransferFailed | StoreError | None, float]:
        """Moves the contents, on the worker's ``connection``, until done, failed or
        ``cancel``-led: the error it ended with (None when it succeeded or was cancelled),
        and the seconds its chunks held for the event sync."""
        core = self._core
        if self.fault is not None:
            self.fault(direction, file_id)
        # Only over the row this transfer read: a stop decided meanwhile ("done" for these
        # contents, held here already) stands, or the row would say "queued" once this
        # stopped transfer put its "in_progress" back, with nothing queued.
        await self._set_state(direction, file_id, attrs.evolve(row, status="in_progress"), row)
        core.notify(f"{direction}.start", file_id=file_id, hash=content_hash, size=size)
        throttle = ProgressThrottle(self._progress_interval)

        def progress(done: int, total: int) -> None:
            self._left[(direction, file_id)] = total - done
            if throttle.should_send(trio.current_time(), done, total):
                core.notify(f"{direction}.progress", file_id=file_id, bytes=done, total=total)
                self.counts_changed()

        pacing = self._pacing
        pacer = None if pacing is None else TransferPacer(pacing, trio.current_time())
        wire = self._wire
        # A download of contents held here already ends at once: no connection for it.
        needs_connection = direction == "upload" or not await wire.holds(content_hash)
        error: TransferFailed | StoreError | None = None
        while not cancel.requested:
            reused = connection.is_open
            # The connection outlives the transfer, so it is opened outside the attempt's
            # scope; a cancel() meanwhile is kept in ``cancel`` and stops the attempt as
            # it enters the scope.
            scope = cancel.scope = trio.CancelScope()
            try:
                session = None
                if needs_connection:
                    opening = not connection.is_open
                    session = await connection.ensure()
                    if opening:
                        core.trace(f"{direction}.connection_opened", file_id=file_id)
                with scope:
                    if direction == "upload":
                        await wire.upload(content_hash, size, progress, pacer, session)
                    else:
                        await wire.download(content_hash, size, progress, pacer, session)
            except (TransferFailed, StoreError) as exc:
                error = exc
            finally:
                cancel.scope = None
            if cancel.requested:
                error = None  # whoever cancelled decides; a failure meanwhile is moot
            elif isinstance(error, TransferFailed) and runs_again_on_new_connection(
                reused=reused, connection_lost=error.connection_lost
            ):
                await self._close(direction, connection, f"found closed: {error}")
                error = None
                continue
            break
        yielded = 0.0 if pacer is None else round(pacer.held, 6)
        return error, yielded

    async def _failed(
        self,
        direction: Direction,
        file_id: str,
        current: TransferState,
        error: TransferFailed | StoreError,
    ) -> None:
        core = self._core
        retryable = not isinstance(error, TransferFailed) or error.retryable
        missing = isinstance(error, TransferFailed) and error.missing
        # Contents not on the server yet (their upload is still to come) are waited for,
        # not failed, and a failure that was not this transfer's fault is no attempt of
        # its own: neither the queue nor the row counts them (unless it repeats).
        queue = self.queues[direction]
        blameless = isinstance(error, TransferFailed) and not error.counted
        counts = not missing and (not blameless or queue.last_failure_uncounted(file_id))
        retry_at = queue.failed(
            file_id, trio.current_time(), core.rng.random(), retryable=retryable, counts=counts
        )
        attempts = current.attempts + (1 if counts else 0)
        status: TransferStatus = "queued" if retry_at is not None else "error"
        if retry_at is None:
            self._left.pop((direction, file_id), None)
        await self._set_state(
            direction, file_id, TransferState(status, current.content_hash, attempts, str(error))
        )
        core.notify(
            f"{direction}.error",
            file_id=file_id,
            error=str(error),
            attempts=attempts,
            retry_in=None if retry_at is None else retry_at - trio.current_time(),
            missing=missing,
        )
        core.trace(f"{direction}.error", file_id=file_id, error=str(error), attempts=attempts)
