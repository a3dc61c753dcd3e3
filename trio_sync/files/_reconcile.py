"""Bringing transfers in line with the facts: what each file's rows and queues must be.

The fold says what the files are; this decides, from that and the rows, which transfers
stop, which downloads are queued, which rows are stale, and which partials and blobs are
garbage. Every decision is taken on rows read on the loop and written with a
compare-and-set on their contents, so a decision never overwrites rows written since
(a save's, say).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from .._errors import StoreError
from ..client._core import ClientCore
from ._blobs import BlobStore
from ._executor import DIRECTIONS, TransferExecutor
from ._fold import FileFold
from ._garbage import BlobCollector
from ._model import Direction, TransferState, rows_for_own_contents, size_problem
from ._state import TransferStateStore


class Reconciler:
    """Decides the transfers of :class:`FileSync` (see the module's text).

    Args:
        wake: Called when rows or transfers changed (waiters look again).
    """

    def __init__(
        self,
        core: ClientCore,
        fold: FileFold,
        states: TransferStateStore,
        blobs: BlobStore,
        executor: TransferExecutor,
        garbage: BlobCollector,
        wake: Callable[[], None],
    ) -> None:
        self._core = core
        self._fold = fold
        self._states = states
        self._blobs = blobs
        self._executor = executor
        self._garbage = garbage
        self._wake = wake
        #: Files to reconcile again once their save ends (see :meth:`_saving`).
        self._after_save: set[str] = set()

    def _saving(self, file_id: str) -> bool:
        """Whether a save of ``file_id`` is under way: then its rows are the save's and
        are left alone here, and the file is reconciled again once the save ends (a fact
        folded meanwhile may be newer than the save's event)."""
        if self._garbage.is_saving(file_id):
            self._after_save.add(file_id)
            return True
        return False

    def take_after_save(self, file_id: str) -> bool:
        """Whether ``file_id`` was left to its save, or raced it (taken: the caller, at
        the save's end, reconciles it again)."""
        noted = file_id in self._after_save
        self._after_save.discard(file_id)
        return noted

    async def reconcile(self, file_ids: set[str]) -> None:
        """Brings transfers in line with the facts: a deleted file's transfers stop; a
        live file whose contents are not here is downloaded; unreferenced blobs go."""
        core = self._core
        #: Rows to delete, as they were when decided (one written again meanwhile stays).
        forget: list[tuple[tuple[str, Direction], TransferState]] = []
        #: Contents of downloads dropped here: their partials may be garbage now.
        dropped: set[str] = set()
        #: Rows to write back for the client's own current contents, with the row read
        #: (written only where it still names what it named: a save's rows stand).
        requeue: list[tuple[tuple[str, Direction], TransferState, TransferState | None]] = []
        #: Live files, with their contents: each one not held here is downloaded.
        live: list[tuple[str, str]] = []
        for file_id in sorted(file_ids):
            info = self._fold.view.files.get(file_id)
            if info is None and self._saving(file_id):
                continue  # its rows are written before its event shows
            if info is None or info.deleted:
                # Deleted, or gone with the log it was in (after a reset).
                for direction in DIRECTIONS:
                    self._executor.cancel(direction, file_id)
                    state = self._states.get(file_id, direction)
                    if state is not None:
                        forget.append(((file_id, direction), state))
                        if direction == "download" and state.status != "done":
                            dropped.add(state.content_hash)
                continue
            upload = self._states.get(file_id, "upload")
            if (
                upload is not None
                and upload.content_hash != info.content_hash
                # A save under way writes its upload row before its event shows in the
                # view: those contents are the newest, not beaten.
                and not self._saving(file_id)
            ):
                self._executor.cancel("upload", file_id)
                download = self._states.get(file_id, "download")
                own = rows_for_own_contents(info, download, core.state.client_id)
                if own is None:
                    forget.append(((file_id, "upload"), upload))
                else:
                    seen = {"upload": upload, "download": download}
                    requeue += [
                        ((file_id, direction), state, seen[direction]) for direction, state in own
                    ]
            live.append((file_id, info.content_hash))
        # One hop to ask the local store, one transaction for the rows: a page of new
        # files (a few hundred facts) costs one fsync here, not one per file.
        blobs = self._blobs
        held = await core.run_store(lambda: {h for _, h in live if blobs.has(h)})
        await self.want_downloads([(f, h) for f, h in live if h not in held])
        requeued = {file_id for (file_id, _), _state, _seen in requeue}
        await self.downloads_done_for_held(
            [
                (f, h)
                for f, h in live
                # A save under way wrote its rows for contents the view shows only soon.
                if h in held and f not in requeued and not self._saving(f)
            ]
        )
        # Before the rows go: a crash in between leaves the rows, and the next start's
        # reconcile comes here again (a partial has no other record).
        for content_hash in sorted(dropped):
            await self.drop_partial(content_hash)
        await core.run_store(self._states.forget, forget)
        if requeue:
            await core.run_store(self._states.set_if_contents_unchanged, requeue)
            for (file_id, direction), state, _seen in requeue:
                # As written now (a row written since the decision was left alone).
                if direction == "upload" and self._states.get(file_id, "upload") == state:
                    self._executor.enqueue("upload", file_id)
        # The status counts uploads failed for good from the rows: one forgotten (its
        # file deleted) or queued again must not keep the client "stuck".
        self._executor.counts_changed()
        await self._garbage.collect()
        self._wake()

    def _download_wants(self, content_hash: str) -> bool:
        """Whether a download of ``content_hash`` has not given up (or was never asked)."""
        rows = self._states.rows  # one snapshot (see TransferStateStore)
        downloads = [
            state
            for (_, direction), state in rows.items()
            if direction == "download" and state.content_hash == content_hash
        ]
        return not downloads or any(state.status != "error" for state in downloads)

    async def retry_given_up(self, every: float) -> None:
        """Every ``every`` seconds (0: never), tries again the downloads that gave up here,
        for the contents their files still have (a full disk may have room again; the
        status counts them as ``downloads_failed`` meanwhile). Runs until cancelled; a
        failure to write their rows is traced and tried again next time."""
        if not every:
            return
        while True:
            await trio.sleep(every)
            view = self._fold.view.files
            again = [
                (file_id, state.content_hash)
                for file_id, state in self._states.failed_downloads.items()
                if (info := view.get(file_id)) is not None
                and not info.deleted
                and info.content_hash == state.content_hash
            ]
            try:
                await self.want_downloads(again, retry_failed=True)
            except StoreError as exc:
                self._core.trace("files.retry_given_up_failed", error=str(exc))

    async def want_downloads(
        self,
        wanted: Sequence[tuple[str, str]],
        *,
        priority: bool = False,
        retry_failed: bool = False,
    ) -> None:
        """Queues the download of each (file id, contents) of ``wanted`` that the file
        still has, its row written first (all in one transaction), unless it is queued
        already or failed for good (then only ``retry_failed`` tries again: an
        application's ``read``, which also asks for ``priority``, or the periodic retry).
        A row naming other contents since it was read here (written by a save, say) is
        left as it is, and so is a file this client is saving."""
        rows: list[tuple[tuple[str, Direction], TransferState, TransferState | None]] = []
        enqueue: list[tuple[str, str]] = []
        saves_begun = self._garbage.saves_begun
        for file_id, content_hash in wanted:
            info = self._fold.view.files.get(file_id)
            if info is None or info.deleted or info.content_hash != content_hash:
                continue  # the file moved on since it was asked for: its own turn comes
            if self._saving(file_id):
                # Its rows may be the save's already ("done" for contents the view shows
                # only once its event is committed), and this write could land after the
                # save looked at them last.
                continue
            state = self._states.get(file_id, "download")
            if (
                state is None
                or state.content_hash != content_hash
                or state.status == "done"
                or (retry_failed and state.status == "error")
            ):
                self._executor.cancel("download", file_id)
                if (
                    state is not None
                    and state.content_hash != content_hash
                    and state.status != "done"
                ):
                    await self.drop_partial(state.content_hash)  # contents replaced
                rows.append(((file_id, "download"), TransferState("queued", content_hash), state))
                enqueue.append((file_id, content_hash))
            elif state.status != "error":
                enqueue.append((file_id, content_hash))
        if rows:
            await self._core.run_store(self._states.set_if_contents_unchanged, rows)
        if rows and self._garbage.saves_begun != saves_begun:
            # A save began since the rows were read: one of the contents a row named
            # passes the compare-and-set, and the write may have landed after the save
            # looked at its rows. Reconciled again once saved (or now, if it ended).
            raced = {file_id for (file_id, _), _, _ in rows}
            saving = {file_id for file_id in raced if self._saving(file_id)}
            enqueue = [(f, h) for f, h in enqueue if f not in saving]
            if raced - saving:
                await self.reconcile(raced - saving)
        for file_id, content_hash in enqueue:
            # As written now (a row changed since it was read was left alone).
            state = self._states.get(file_id, "download")
            if state is not None and state.content_hash == content_hash and state.status != "error":
                self._executor.enqueue("download", file_id, priority=priority)

    async def downloads_done_for_held(self, files: Sequence[tuple[str, str]]) -> None:
        """For each (file id, its current contents, held here): a download row naming
        other contents, or not done, is stale (the contents came with another file, or a
        download was decided on a view the client's own save replaced). It becomes done
        for the contents held (where it still names what it named), and its transfer
        stops.

        Raises:
            StoreError: The rows could not be written (nothing changed).
            ClientClosed: The client closed.
        """
        rows: list[tuple[tuple[str, Direction], TransferState, TransferState | None]] = []
        dropped: set[str] = set()
        blobs = self._blobs
        sizes = await self._core.run_store(lambda: {h: blobs.size(h) for _, h in files})
        for file_id, content_hash in files:
            info = self._fold.view.files.get(file_id)
            if info is None or info.deleted or info.content_hash != content_hash:
                continue  # the file moved on since it was listed: its own turn comes
            held = sizes.get(content_hash)
            # A fact whose size is not its contents' (committed by hand, by a buggy peer)
            # is no file anyone can have: said, as every client that lacks them says it.
            problem = size_problem(held, info.size)
            done = (
                TransferState("done", content_hash)
                if problem is None
                else TransferState("error", content_hash, 0, problem)
            )
            state = self._states.get(file_id, "download")
            if _already(state, done):
                continue
            self._executor.cancel("download", file_id)
            if state is not None and state.status != "done" and state.content_hash != content_hash:
                dropped.add(state.content_hash)
            rows.append(((file_id, "download"), done, state))
        if not rows:
            return
        await self._core.run_store(self._states.set_if_contents_unchanged, rows)
        for content_hash in sorted(dropped):
            await self.drop_partial(content_hash)
        self._wake()

    async def drop_partial(self, content_hash: str) -> None:
        """Deletes the partial download of ``content_hash`` unless a download is writing
        it (whose end calls this again) or a live file still waits for those contents
        (not when they are stored already, saved by this client meanwhile, say, nor when
        every download of them gave up: a partial that filled the disk is not kept on a
        full disk; a download tried again starts afresh)."""
        if self._executor.moving("download", content_hash):
            return
        if (
            content_hash in self._fold.view.live_hashes()
            and not self._blobs.has(content_hash)
            and self._download_wants(content_hash)
        ):
            return
        try:
            await self._core.run_store(self._blobs.discard_partial, content_hash)
        except StoreError as exc:
            # A leftover partial costs room, no more: the fold, a delete or a worker
            # must not end for it (a later drop of the same contents tries again).
            self._core.trace("files.partial_not_dropped", hash=content_hash, error=str(exc))


def _already(state: TransferState | None, verdict: TransferState) -> bool:
    """Whether a download row already says ``verdict`` for its contents: "done" whatever
    its attempts (no row at all counts as done), an error with the same reason."""
    if verdict.status == "done":
        return state is None or (state.content_hash, state.status) == (verdict.content_hash, "done")
    return state == verdict
