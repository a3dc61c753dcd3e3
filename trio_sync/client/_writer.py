"""The client's writer: one task that writes every change to the client's store.

Whatever waits when the writer is free goes into one transaction: commits from any number
of tasks (one fsync for all of them: group commit), pulled pages, the last ack. A batch is
fsynced only when it holds a commit, the one write whose durability is promised when the
call returns; pages and acks are written atomically and become durable with the next
commit (a crash before that only means pulling them again, or pushing events the server
already holds and answers for with the same positions).

A batch that needs an fsync runs in a worker thread; a small one that does not (an ack, a
live page) costs less than the hop to a thread and runs right here; a large catch-up batch
goes to the thread too, so that the loop keeps decoding the next pages meanwhile. The
store's automatic checkpoints are off, so that nothing here fsyncs; every
``CHECKPOINT_EVERY`` batches one runs in the thread.

Commits get their ``client_seq`` here, when the batch is formed, so a failed write leaves
no gap: the next batch numbers from the same place. All commits of a batch are one write,
so they succeed or fail together. What a write changes in memory (the pending list, the
head) is applied here too, in order, right after the transaction, before anyone else runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from .._errors import ClientClosed, StoreError
from ..protocol import Advance, Draft, Event, Rebase
from ..store import ClientStore
from ..store._client_store import Write
from ._core import ClientCore


@attrs.define(eq=False)
class _Job:
    done: trio.Event = attrs.field(factory=trio.Event, init=False)
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


@attrs.define(eq=False)
class _Ack(_Job):
    acked_through: int
    lineage: int = 0


@attrs.define(eq=False)
class _Synced(_Job):
    at: float


#: Batches between two checkpoints of the store's write-ahead log.
CHECKPOINT_EVERY = 256
#: A batch without an fsync writing up to this many pulled events runs on the event loop
#: (cheaper than the hop to a thread); a larger one runs in the thread.
INLINE_ROWS = 64


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

    async def merge(self, result: Advance | Rebase) -> None:
        """Writes a merged upstream batch, then applies it in memory.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client is closing.
        """
        await self._submit(_Merge(result, lineage=self._core.lineage))

    def note_ack(self, acked_through: int) -> None:
        """Records an acknowledgement with the next batch (nobody waits for it)."""
        if not self._closed:
            self._send.send_nowait(_Ack(acked_through, lineage=self._core.lineage))

    def note_synced(self, at: float) -> None:
        """Records when the client was last synced, with the next batch."""
        if not self._closed:
            self._send.send_nowait(_Synced(at))

    async def _submit(self, job: _Job) -> None:
        if self._closed:
            raise ClientClosed("this client is closing")
        self._send.send_nowait(job)
        core = self._core
        core.writes_in_flight += 1
        try:
            if isinstance(job, _Commit):
                # A commit either returned or never happened: once queued, it is waited for.
                with trio.CancelScope(shield=True):
                    await job.done.wait()
            else:
                await job.done.wait()
        finally:
            core.writes_in_flight -= 1
            if not core.sync_busy:
                core.changed.notify()  # what waits for the event sync to be idle goes on
        if job.error is not None:
            raise job.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Writes batches until cancelled; then fails whatever is still queued."""
        task_status.started()
        try:
            async for first in self._jobs:
                batch = [first]
                while True:
                    try:
                        batch.append(self._jobs.receive_nowait())
                    except trio.WouldBlock:
                        break
                async with self.exclusive:
                    await self._write(batch)
        finally:
            self._closed = True
            closed = ClientClosed("the client closed before this write")
            while True:
                try:
                    self._jobs.receive_nowait().fail(closed)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    async def _run_batch(
        self, store: ClientStore, writes: list[Write], *, durable: bool, rows: int
    ) -> list[object]:
        self._batches_since_checkpoint += 1
        if self._batches_since_checkpoint >= CHECKPOINT_EVERY:
            self._batches_since_checkpoint = 0
            await self._core.run_store(store.checkpoint)
        if durable or rows > INLINE_ROWS:
            # An fsync, or a large catch-up batch: in the thread, so the event loop goes on
            # receiving and decoding the next pages meanwhile.
            return await self._core.run_store(partial(store.write_batch, durable=durable), writes)
        # No fsync: cheaper than a hop to a thread. Still a cancellation point first, as
        # a store call is everywhere else.
        await trio.lowlevel.checkpoint_if_cancelled()
        return store.write_batch(writes, durable=False)

    async def _write(self, batch: list[_Job]) -> None:
        core = self._core
        store: ClientStore = core.store
        commits = [job for job in batch if isinstance(job, _Commit)]
        lineage = core.lineage
        for old in batch:
            if isinstance(old, (_Merge, _Ack)) and old.lineage != lineage:
                # From before a reset: about a log this store no longer holds.
                old.fail(ClientClosed("the store was reset before this write"))
        merges = [job for job in batch if isinstance(job, _Merge) and job.lineage == lineage]
        acks = [job for job in batch if isinstance(job, _Ack) and job.lineage == lineage]
        synced = [job for job in batch if isinstance(job, _Synced)]
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
        if acks:
            writes.append(store.ack_write(max(job.acked_through for job in acks)))
        if synced:
            writes.append(store.synced_write(synced[-1].at))
        try:
            rows = sum(len(m.result.applied) for m in merges)
            results = await self._run_batch(store, writes, durable=bool(commits), rows=rows)
        except StoreError as exc:
            for failed in batch:
                failed.fail(exc)
            return
        if commits:
            error = results.pop(0)
            for commit in commits:
                if isinstance(error, BaseException):
                    commit.fail(error)
                    continue
                core.note_commits(commit.events)
                commit.done.set()
        for merge, outcome in zip(merges, results, strict=False):
            if isinstance(outcome, BaseException):
                merge.fail(outcome)
            else:
                core.note_merge(merge.result)
                merge.done.set()
        for note in (*acks, *synced):
            note.done.set()
