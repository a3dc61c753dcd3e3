"""The client's writer: one task that writes every change to the client's store.

Whatever waits when the writer is free goes into one transaction: commits from any number
of tasks (one fsync for all of them: group commit), pulled pages, the last ack. A batch is
fsynced only when it holds a commit, the one write whose durability is promised when the
call returns; pages and acks are written atomically and become durable with the next
commit (a crash before that only means pulling them again, or pushing events the server
already holds and answers for with the same positions).

A small batch that needs no fsync (a live page) costs less than the hop to a thread and
runs right here; a large catch-up batch goes to the thread, so that the loop keeps decoding
the next pages meanwhile. A batch that needs an fsync runs here too while the disk is fast
(``WritePlacement``: it then blocks the loop for less than the hop would cost), in the
thread once it is not. The store's automatic checkpoints are off, so that nothing done here
checkpoints; every ``CHECKPOINT_EVERY`` batches one runs in the thread.

Acknowledgements and the time the client was last synced wake nobody: they are written
with the next batch (an ack lost in a crash only means pushing events again, answered with
the positions the server already gave them), the sync time also on its own at most once a
``SYNCED_WRITE_INTERVAL``, and both when the writer stops.

Commits get their ``client_seq`` here, when the batch is formed, so a failed write leaves
no gap: the next batch numbers from the same place. All commits of a batch are one write,
so they succeed or fail together. What a write changes in memory (the pending list, the
head) is applied here too, in order, right after the transaction, before anyone else runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from functools import partial

import attrs
import trio

from .._errors import ClientClosed, StoreError
from .._store_runner import despite_interrupts, placement_for, run_durable
from ..protocol import Advance, Draft, Event, Rebase
from ..store import ClientStore
from ..store._client_store import Write
from ._core import ClientCore


class _Done:
    """The end of a job, waited for by the one task that submitted it.

    Cheaper than a ``trio.Event`` and, for a commit, than the shielding cancel scope
    around its wait: a task gathering another's commit waits on this alone.
    """

    __slots__ = ("_ended", "_waiter")

    def __init__(self) -> None:
        self._ended = False
        self._waiter: trio.lowlevel.Task | None = None

    def set(self) -> None:
        self._ended = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def is_set(self) -> bool:
        return self._ended

    async def wait(self) -> None:
        """Waits for the end; a cancellation ends the wait (not the job)."""
        if self._ended:
            await trio.lowlevel.checkpoint()
            return
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def wait_through_cancellation(self) -> None:
        """Waits for the end whatever happens meanwhile: a cancellation (or a Ctrl-C
        in the main task) is delivered at the caller's next checkpoint, once the job
        ended."""
        if self._ended:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


@attrs.define(eq=False)
class _Job:
    done: _Done = attrs.field(factory=_Done, init=False)
    error: BaseException | None = attrs.field(default=None, init=False)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@attrs.define(eq=False)
class _Commit(_Job):
    drafts: Sequence[Draft]
    events: list[Event] = attrs.field(factory=list, init=False)


@attrs.define(eq=False)
class _Merge(_Job):
    result: Advance | Rebase
    #: The store lineage it belongs to: one queued before a reset is dropped.
    lineage: int = 0
    #: The bytes of the pages that brought it (0: unknown).
    size: int = 0


@attrs.define(eq=False)
class _Flush(_Job):
    """Writes what waits to be written with the next batch (a batch of its own)."""


#: Batches between two checkpoints of the store's write-ahead log.
CHECKPOINT_EVERY = 256
#: A batch without an fsync writing up to this many pulled events runs on the event loop
#: (cheaper than the hop to a thread: 500 rows take about 1 ms to write, as long as an
#: fsync the loop bears; a live page of 100 events, 0.2 ms); a larger one, a catch-up's,
#: runs in the thread, so that the loop decodes the next pages meanwhile. (At 64, every
#: page of a stream of 100-event batches went to the thread: 13% more CPU an event.)
INLINE_ROWS = 500
#: And up to this many bytes of pages: 500 large events take tens of milliseconds.
INLINE_BYTES = 256 * 1024
#: The time the client was last synced is written on its own at most this often (wall
#: seconds); otherwise with the next batch.
SYNCED_WRITE_INTERVAL = 1.0


class ClientWriter:
    """Batches the client's writes; :meth:`run` is its task."""

    def __init__(self, core: ClientCore) -> None:
        self._core = core
        self._send, self._jobs = trio.open_memory_channel[_Job](math.inf)
        self._closed = False
        self._batches_since_checkpoint = 0
        #: Held while a batch is written; ``Client.reset()`` holds it to change the store
        #: with no batch in between.
        self.exclusive = trio.Lock()
        #: Where durable batches run (None: where ``run_store`` runs them).
        self.placement = placement_for(core.run_store)
        #: Written with the next batch: the highest ack, the sync time (each with the
        #: lineage it belongs to: after a reset, the old one's are dropped).
        self._ack: tuple[int, int] | None = None
        self._synced: tuple[float, int] | None = None
        self._synced_written_at = -math.inf
        #: The commits a task writing its own commit gathers (None: none is).
        self._gathering: list[_Job] | None = None

    async def commit(self, drafts: Sequence[Draft]) -> list[Event]:
        """Writes new commits durably (with any others waiting); returns them as events.

        Once queued, the write completes even if the caller is cancelled, and the caller
        waits for it (a commit either returned or never happened).

        Raises:
            StoreError: The write failed; nothing of these drafts was recorded.
            ClientClosed: The client is closing.
        """
        job = _Commit(drafts)
        await self._submit(job)
        return job.events

    async def merge(self, result: Advance | Rebase, *, size: int = 0) -> None:
        """Writes a merged upstream batch (``size``: the bytes of the pages that brought
        it, 0 if unknown), then applies it in memory.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client is closing.
        """
        await self._submit(_Merge(result, lineage=self._core.lineage, size=size))

    def note_ack(self, acked_through: int) -> None:
        """Records an acknowledgement with the next batch (nobody waits for it)."""
        self._ack = (acked_through, self._core.lineage)

    def note_synced(self, at: float) -> None:
        """Records when the client was last synced: with the next batch, or in a batch of
        its own if the one recorded is older than ``SYNCED_WRITE_INTERVAL``."""
        self._synced = (at, self._core.lineage)
        if at - self._synced_written_at >= SYNCED_WRITE_INTERVAL and not self._closed:
            self._synced_written_at = at
            self._send.send_nowait(_Flush())

    async def close_store(self) -> None:
        """Closes the store once no write is under way (a commit from a task outside the
        open_client block, or a reset, may still be writing in a worker thread), even if
        Ctrl-C comes meanwhile (then raised once it is closed)."""

        async def close_when_no_write() -> None:
            async with self._no_write_under_way():
                await self._core.run_store(self._core.store.close)

        await despite_interrupts(close_when_no_write)

    @contextlib.asynccontextmanager
    async def _no_write_under_way(self) -> AsyncIterator[None]:
        """Holds the writer once no write is under way. A hold of this very task (a
        test's, say) is one already."""
        if self.exclusive.statistics().owner is trio.lowlevel.current_task():
            yield
            return
        if self.exclusive.locked():
            await self.exclusive.acquire()
        else:
            # No schedule point when nothing writes: a close is then what it was (and a
            # simulated run's trace with it).
            self.exclusive.acquire_nowait()
        try:
            yield
        finally:
            self.exclusive.release()

    def _idle(self) -> bool:
        """Nothing is queued for the writer or being written."""
        return not self.exclusive.locked() and not self._jobs.statistics().current_buffer_used

    # Ctrl-C is held back in here and in _write (Trio delivers it to the main task at
    # its next checkpoint instead): raised between the count of writes in flight and its
    # try, between opening a gathering and its try, or between a durable write and the
    # memory it updates, it would leave the status busy, every later commit waiting on a
    # gathering nobody writes, or the store and memory apart.
    @trio.lowlevel.enable_ki_protection
    async def _submit(self, job: _Job) -> None:
        # A cancellation point, as every Trio call is: a commit cancelled before it is
        # queued never happened (once queued it is waited for, so without this a loop of
        # commits in a cancelled scope would never end). While the client closes, its own
        # tasks (a page being applied) end with their cancellation here too, not with an
        # error that would escape open_client; anyone else is told.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise ClientClosed("this client is closing")
        core = self._core
        core.writes_in_flight += 1
        try:
            if isinstance(job, _Commit):
                # A commit either returned or never happened: once written or queued, it
                # is waited for.
                if self._gathering is not None:
                    self._gathering.append(job)  # a commit being led: share its write
                    await job.done.wait_through_cancellation()
                elif self._idle() and self._durable_inline():
                    with trio.CancelScope(shield=True):
                        await self._lead(job)
                else:
                    self._send.send_nowait(job)
                    await job.done.wait_through_cancellation()
            elif isinstance(job, _Merge) and self.writes_here(len(job.result.applied), job.size):
                # A small page, written on the loop right here: nothing else starts
                # meanwhile, so order is kept, and the switch to the writer task and back
                # is saved.
                await self._write_here([job])
            else:
                self._send.send_nowait(job)
                await job.done.wait()
        finally:
            core.writes_in_flight -= 1
            if not core.sync_busy:
                core.changed.notify()  # what waits for the event sync to be idle goes on
        if job.error is not None:
            if isinstance(job.error, ClientClosed):
                await trio.lowlevel.checkpoint_if_cancelled()  # as above
            raise job.error

    def writes_here(self, rows: int, size: int) -> bool:
        """Whether a merge of ``rows`` events that came in ``size`` bytes would be written
        on the loop at once (no wait for another write, a checkpoint or the thread)."""
        return (
            _small(rows, size)
            and self._idle()
            and self._batches_since_checkpoint + 1 < CHECKPOINT_EVERY
        )

    def _durable_inline(self) -> bool:
        return self.placement is None or self.placement.inline

    async def _lead(self, job: _Commit) -> None:
        """Writes ``job`` in this task, with every commit made meanwhile (group commit
        without the writer task): first every other task ready to run has its turn, and
        the commits they make join this one's transaction."""
        gathered: list[_Job] = [job]
        self._gathering = gathered
        self.exclusive.acquire_nowait()  # the writer task and pages wait meanwhile
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._gathering = None
            await self._write(gathered)
        except BaseException as exc:
            _fail_unfinished(gathered, exc)
            raise
        finally:
            self._gathering = None
            self.exclusive.release()

    async def _write_here(self, batch: list[_Job]) -> None:
        self.exclusive.acquire_nowait()
        try:
            await self._write(batch)
        finally:
            self.exclusive.release()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Writes batches until cancelled; then fails whatever is still queued and writes
        what waited for a batch."""
        task_status.started()
        try:
            async for first in self._jobs:
                batch = [first]
                while True:
                    try:
                        batch.append(self._jobs.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    if self.exclusive.locked():  # a reset is under way
                        async with self.exclusive:
                            await self._write(batch)
                    else:
                        # Uncontended: no schedule point (a lock's acquire always yields).
                        await self._write_here(batch)
                except BaseException as exc:
                    # Cancelled mid-batch (the client closing): each commit's caller
                    # waits for its job inside a shield, so every job is ended here.
                    _fail_unfinished(batch, exc)
                    raise
        finally:
            self._closed = True
            while True:
                try:
                    self._jobs.receive_nowait().fail(
                        ClientClosed("the client closed before this write")
                    )
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            with trio.CancelScope(shield=True):
                await self._write_notes()

    def _notes(self) -> list[Write]:
        """The writes that wait for a batch (taken: the next batch writes them)."""
        writes = []
        if self._ack is not None:
            acked_through, lineage = self._ack
            if lineage == self._core.lineage:  # else about a log the store no longer holds
                writes.append(self._core.store.ack_write(acked_through))
            self._ack = None
        if self._synced is not None:
            at, lineage = self._synced
            if lineage == self._core.lineage:  # a reset cleared the old lineage's
                writes.append(self._core.store.synced_write(at))
            self._synced = None
        return writes

    async def _write_notes(self) -> None:
        if self.exclusive.locked():
            return  # a reset (it clears them) or a batch (it takes them) is under way
        writes = self._notes()
        # Nothing waits for them: an ack lost means a push again, no more.
        if writes:
            with contextlib.suppress(StoreError):
                await self._core.run_store(
                    partial(self._core.store.write_batch, durable=False), writes
                )

    async def _run_batch(
        self, store: ClientStore, writes: list[Write], *, durable: bool, rows: int, size: int
    ) -> list[object]:
        self._batches_since_checkpoint += 1
        if self._batches_since_checkpoint >= CHECKPOINT_EVERY:
            self._batches_since_checkpoint = 0
            await self._core.run_store(store.checkpoint)
        if durable:
            return await self._run_durable(store, writes)
        if not _small(rows, size):
            # A large catch-up batch: in the thread, so the event loop goes on receiving
            # and decoding the next pages meanwhile.
            return await self._core.run_store(partial(store.write_batch, durable=False), writes)
        # No fsync: cheaper than a hop to a thread. Still a cancellation point first, as
        # a store call is everywhere else.
        await trio.lowlevel.checkpoint_if_cancelled()
        return store.write_batch(writes, durable=False)

    async def _run_durable(self, store: ClientStore, writes: list[Write]) -> list[object]:
        return await run_durable(
            self.placement,
            self._core.run_store,
            partial(store.write_batch, durable=True),
            writes,
            # File transfers write to the same disk: an fsync may wait behind them.
            disk_busy=self._core.file_transfers.bytes_left > 0,
        )

    @trio.lowlevel.enable_ki_protection  # see _submit
    async def _write(self, batch: list[_Job]) -> None:
        core = self._core
        store: ClientStore = core.store
        commits = [job for job in batch if isinstance(job, _Commit)]
        lineage = core.lineage
        for old in batch:
            if isinstance(old, _Merge) and old.lineage != lineage:
                # From before a reset: about a log this store no longer holds.
                old.fail(ClientClosed("the store was reset before this write"))
        merges = [job for job in batch if isinstance(job, _Merge) and job.lineage == lineage]
        flushes = [job for job in batch if isinstance(job, _Flush)]
        next_seq = core.state.next_client_seq
        for job in commits:
            job.events = [
                draft.event(core.state.client_id, next_seq + i)
                for i, draft in enumerate(job.drafts)
            ]
            next_seq += len(job.drafts)
        writes: list[Write] = []
        if commits:
            writes.append(
                store.pending_write(
                    [e for job in commits for e in job.events], committed_at=core.wall_clock()
                )
            )
        writes += [store.upstream_write(m.result.applied, m.result.confirmed_own) for m in merges]
        writes += self._notes()
        try:
            rows = sum(len(m.result.applied) for m in merges)
            size = sum(m.size for m in merges)
            results = await self._run_batch(
                store, writes, durable=bool(commits), rows=rows, size=size
            )
        except StoreError as exc:
            for failed in batch:
                failed.fail(exc)
            return
        if commits:
            error = results.pop(0)
            if isinstance(error, BaseException):
                for commit in commits:
                    commit.fail(error)
            else:
                # One note for the batch: one wake-up of whatever waits for changes.
                core.note_commits([event for commit in commits for event in commit.events])
                for commit in commits:
                    commit.done.set()
        for merge, outcome in zip(merges, results, strict=False):
            if isinstance(outcome, BaseException):
                merge.fail(outcome)
            else:
                core.note_merge(merge.result)
                merge.done.set()
        for flush in flushes:
            flush.done.set()


def _small(rows: int, size: int) -> bool:
    """Whether a write of pulled events without an fsync runs on the event loop."""
    return rows <= INLINE_ROWS and size <= INLINE_BYTES


def _fail_unfinished(jobs: Sequence[_Job], exc: BaseException) -> None:
    """Fails every job of ``jobs`` not done yet with ``exc`` (a cancellation: with
    ClientClosed, the client is closing), so that no caller waits for it for ever."""
    for job in jobs:
        if not job.done.is_set():
            # One exception object per caller: a shared one collects every caller's
            # traceback as each raises it.
            job.fail(exc if isinstance(exc, Exception) else ClientClosed("the client closed"))
