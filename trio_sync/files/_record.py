"""Recording a file's new contents: its transfer rows, then its event, as one step.

The rows come first, so that a crash after the event's commit still finds the upload to
do (a row with no event is harmless: the next reconcile drops it). Two rules keep the rows
and the events telling the same story:

- One file's recordings are serialised (a lock per file). Two tasks of one client
  updating a file at once would otherwise write their rows in one order and commit their
  events in the other, leaving the upload row for the contents that lost and nothing to
  upload the winner.
- A commit that fails (a full disk, the client closing) puts the rows back as they were:
  the contents not recorded are never uploaded, and the ones still current are (their
  transfer was stopped for the new contents, so it is queued again).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from .._errors import ClientClosed, StoreError
from ..client._core import ClientCore
from ..protocol import Draft
from ._executor import DIRECTIONS, TransferExecutor
from ._model import Direction, TransferState
from ._state import TransferStateStore


class ContentsRecorder:
    """Records new contents of files for :class:`FileSync` (see the module's text)."""

    def __init__(
        self, core: ClientCore, states: TransferStateStore, executor: TransferExecutor
    ) -> None:
        self._core = core
        self._states = states
        self._executor = executor
        #: One lock per file with a recording under way or waiting (dropped after).
        self._locks: dict[str, trio.Lock] = {}

    async def record(
        self,
        file_id: str,
        content_hash: str,
        draft: Draft,
        *,
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> str | None:
        """Writes the rows for ``content_hash`` (upload queued, download done), stops the
        file's transfers, and commits ``draft``; then awaits ``then()`` (shielded, still
        holding the file's lock: no other recording of the file writes its rows
        meanwhile). Returns once the event is durable and ``then`` returned: the contents
        of a download of the file these replaced unfinished (its partial may be garbage
        now), if any.

        Raises:
            StoreError: A write failed; nothing was recorded, the rows are as before.
            ClientClosed: The client closed first; nothing was recorded.
        """
        async with self._lock(file_id), self._counted():
            core, states = self._core, self._states
            before = {direction: states.get(file_id, direction) for direction in DIRECTIONS}
            await core.run_store(
                states.set_many,
                [
                    ((file_id, "upload"), TransferState("queued", content_hash)),
                    ((file_id, "download"), TransferState("done", content_hash)),
                ],
            )
            for direction in DIRECTIONS:
                self._executor.cancel(direction, file_id)
            try:
                await core.writer.commit([draft])
            except BaseException:
                # A commit either returned or never happened (ClientWriter.commit): this
                # one never did.
                with trio.CancelScope(shield=True):
                    await self._undo(file_id, content_hash, before)
                raise
            if then is not None:
                # The event is committed: whatever ``then`` does (queue the upload, say)
                # must not be skipped by a cancellation of the caller.
                with trio.CancelScope(shield=True):
                    await then()
            download = before["download"]
            if download is None or download.status == "done":
                return None
            return None if download.content_hash == content_hash else download.content_hash

    async def _undo(
        self, file_id: str, content_hash: str, before: dict[Direction, TransferState | None]
    ) -> None:
        restored: list[tuple[tuple[str, Direction], TransferState | None]] = []
        for direction, state in before.items():
            if state is not None and state.status == "in_progress":
                # Its worker was stopped for the new contents: queued again, it resumes.
                state = TransferState("queued", state.content_hash, state.attempts)
            restored.append(((file_id, direction), state))
        try:
            # Only rows still for the contents written here (the fold may have queued the
            # download of another client's contents meanwhile: that stands).
            await self._core.run_store(self._states.restore, restored, content_hash)
        except (StoreError, ClientClosed) as exc:
            # The rows stay for contents no event names: the next reconcile (at the
            # latest, when the client opens again) sees that and puts them right.
            self._core.trace("files.undo_failed", file_id=file_id, error=str(exc))
            return
        for (_, direction), state in restored:
            restored_here = state is not None and self._states.get(file_id, direction) == state
            if restored_here and state is not None and state.status == "queued":
                self._executor.enqueue(direction, file_id)

    @contextlib.asynccontextmanager
    async def _counted(self) -> AsyncIterator[None]:
        # Status: from the moment the old contents' upload stops until the new event is
        # pending, an upload is still owed ("synced" would be a lie in between).
        self._executor.recording += 1
        self._executor.counts_changed()
        try:
            yield
        finally:
            self._executor.recording -= 1
            self._executor.counts_changed()

    @contextlib.asynccontextmanager
    async def _lock(self, file_id: str) -> AsyncIterator[None]:
        """Holds the file's lock; the map keeps a lock only while a recording holds it or
        waits for it (a released lock passes straight to its next waiter)."""
        lock = self._locks.setdefault(file_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(file_id) is lock:
                del self._locks[file_id]
