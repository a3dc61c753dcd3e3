"""``client.files``: save, update, delete and read files that sync between clients.

Facts are events (``file.created``/``updated``/``deleted``) committed like any other, so
they sync, order and survive exactly as events do. Contents are blobs: stored locally by
hash, moved by the :class:`TransferExecutor`. What each transfer is doing is this
client's own durable state (``files.state()``), never synced."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import attrs
import trio

from .._errors import ClientClosed, StoreError
from ..client._core import ClientCore
from ..protocol import Draft
from ._blobs import BlobStore, read_and_hash
from ._bulk import bulk_runner, stoppable_bulk
from ._errors import FileNotFound, FileTransferError
from ._executor import EventSyncGate, FaultHook, TransferExecutor
from ._fold import FileFold
from ._garbage import BlobCollector
from ._model import (
    FILE_CREATED,
    FILE_DELETED,
    FILE_UPDATED,
    Direction,
    FileInfo,
    FileState,
    TransferState,
    check_metadata,
    file_event_args,
    local_copy_problem,
    new_file_id,
)
from ._options import FileOptions, default_places
from ._queue import stale_on_open
from ._reconcile import Reconciler
from ._record import ContentsRecorder
from ._repair import repair_lost_uploads
from ._source import source_size
from ._state import TransferStateStore
from ._state_recovery import open_transfer_state, rebuild_state
from ._unsettled import SETTLE_AGAIN_EVERY, UnsettledFiles
from ._wire import BlobClient, OpenConnection

#: Seconds the reconcile after a save that queued no upload may take (it is shielded).
LOOK_AGAIN_TIMEOUT = 10.0


class FileSync:
    """Files on a client (``client.files``); see the module's description and
    docs/files.md."""

    def __init__(
        self,
        core: ClientCore,
        store_path: str,
        options: FileOptions,
        *,
        connect: OpenConnection,
        token: Callable[[], Awaitable[str | None]],
    ) -> None:
        self._core = core
        self._store_path = store_path
        self._options = options
        self._connect = connect
        self._token = token
        self._fold = FileFold(core, self._wake)
        self._changed = trio.Event()
        self._closed = False
        #: Files whose reconcile failed (a full disk, say): reconciled again until it
        #: works, and until then the transfers are not called settled.
        self._unsettled = UnsettledFiles()
        self.blobs: BlobStore
        self._states: TransferStateStore
        self.executor: TransferExecutor
        self._garbage: BlobCollector
        self._recorder: ContentsRecorder
        self._reconciler: Reconciler

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Opens the local state, recovers what a crashed run left, and runs the executor
        and the fold of file events until cancelled.

        Raises:
            StoreError: The transfer state or the blob directory cannot be opened.
        """
        core, options = self._core, self._options
        self.blobs, state_path = await core.run_store(default_places, self._store_path, options)
        self._states, new = await core.run_store(open_transfer_state, state_path)
        self._garbage = BlobCollector(
            self.blobs,
            core.run_store,
            needed=self._needed_blobs,
            version=lambda: (self._fold.view, self._states.version),
            trace=core.trace,
        )
        try:
            wire = BlobClient(
                self._connect,
                core.state.client_id,
                self._token,
                self.blobs,
                bulk_runner(core.run_store),
                timeout=options.transfer_timeout,
                gate=EventSyncGate(core),
            )
            self.executor = TransferExecutor(
                core,
                self._states,
                wire,
                target=self._target,
                finished=self._transfer_finished,
                owed_by=self._fold.author_of,
                uploads=options.uploads,
                downloads=options.downloads,
                retry=options.retry,
                progress_interval=options.progress_interval,
                pacing=options.pacing,
                keep_connection=options.keep_connection,
            )
            self._recorder = ContentsRecorder(core, self._states, self.executor)
            self._reconciler = Reconciler(
                core,
                self._fold,
                self._states,
                self.blobs,
                self.executor,
                self._garbage,
                self._wake,
            )
            await self._recover_stale()
            await self._fold.catch_up()
            await rebuild_state(core, self._states, self.blobs, self._fold.view, new)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.executor.run)
                # The files with rows too: a crash between a save's rows and its event
                # leaves rows for a file no event names.
                rows = {file_id for file_id, _ in self._states.rows}
                await self._reconciler.reconcile(set(self._fold.view.files) | rows)
                # When the files open, beside the stale transfers, and every few minutes:
                # uploads the server lost since (a rotten copy it set aside, a backup);
                # every few minutes, the downloads that gave up (a disk full then).
                repair = (core, self._states, self.blobs, wire, self.executor, options)
                nursery.start_soon(repair_lost_uploads, *repair)
                nursery.start_soon(self._reconciler.retry_given_up, options.retry_given_up_every)
                core.tick_checks.append(self.executor.heartbeat_check)
                try:
                    nursery.start_soon(self._follow)
                    nursery.start_soon(self._settle_unsettled)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    core.tick_checks.remove(self.executor.heartbeat_check)
        finally:
            self._closed = True  # every waiter is woken to learn it
            self._wake()
            if hasattr(self, "executor"):
                self.executor.changed.notify()
            with trio.CancelScope(shield=True):
                await core.run_store(self._states.close)

    async def _recover_stale(self) -> None:
        """Once per client lifecycle (here, at open; never on a reconnect): transfers a
        crashed run left in progress or in error are queued again."""
        rows = self._states.rows
        stale = {
            key
            for key, state in rows.items()
            if (key[0], key[1]) in stale_on_open([(key[0], key[1], state.status)])
        }
        changes: list[tuple[tuple[str, Direction], TransferState | None]] = [
            (key, attrs.evolve(rows[key], status="queued", attempts=0)) for key in sorted(stale)
        ]
        await self._core.run_store(self._states.set_many, changes)
        if stale:
            self._core.trace("files.stale_recovered", count=len(stale))
            self._core.notify("files.recovered", transfers=len(stale))
        for (fid, direction), state in sorted(self._states.rows.items()):  # as written now
            if state.status == "queued":
                self.executor.enqueue(direction, fid)

    # --- the public API -------------------------------------------------------------------

    async def save(
        self, data: bytes | Path, *, path: str, metadata: Mapping[str, object] | None = None
    ) -> str:
        """Stores a new file and returns its id; its contents upload in the background.

        Args:
            data: The contents, or a file to copy them from (in blocks; it must not change).
            path: The application's name for the file.
            metadata: JSON values under ``str`` keys to keep with it.

        Raises:
            TypeError: ``data`` is neither bytes nor a ``Path`` (a ``str`` is refused: it
                would be ambiguous); ``path`` is not a ``str``; ``metadata`` is not a
                mapping, or has a key that is not a ``str`` (JSON would turn it into one).
            ValueError: ``path`` is empty.
            FileNotFoundError: ``data`` is a ``Path`` to no regular file.
            StoreError: Not stored (``StoreFull``: the disk is full; or the file changed meanwhile).
            InvalidEvent: The metadata cannot travel in an event (not JSON, too large).

        Whatever is refused, nothing is stored: the metadata and the event are checked
        before the contents are.
        """
        if not isinstance(path, str):
            # Every client's fold skips a fact whose path is not a string: the file
            # would be saved, uploaded, and then known nowhere.
            raise TypeError(f"a file's path is a str, not {type(path).__name__}")
        if not path:
            raise ValueError("a file's path is not empty: it is the application's name for it")
        metadata = check_metadata({} if metadata is None else metadata, self._max_values())
        file_id = new_file_id(self._core.rng)
        await self._write(FILE_CREATED, file_id, data, path, metadata)
        return file_id

    async def update(
        self,
        file_id: str,
        data: bytes | Path,
        *,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        """Replaces a file's contents (and its metadata, if given; None keeps it).

        Raises:
            FileNotFound: No such live file.
            TypeError, InvalidEvent: As for :meth:`save` (nothing is stored then).
            StoreError: The contents could not be stored.
        """
        checked = None if metadata is None else check_metadata(metadata, self._max_values())
        await self._view_caught_up()
        info = self._live(file_id)
        await self._write(
            FILE_UPDATED,
            file_id,
            data,
            info.path,
            dict(info.metadata) if checked is None else checked,
        )

    async def _write(
        self, name: str, file_id: str, data: bytes | Path, path: str, metadata: dict[str, object]
    ) -> None:
        core = self._core
        await self._still_open()  # before copying megabytes for nothing
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, (bytes, Path)):
            # A str is neither: taking it as a path would store whatever file it names.
            raise TypeError(
                f"file contents are bytes or a pathlib.Path to copy from, not {type(data).__name__}"
            )
        if isinstance(data, Path):
            expected_size = await trio.to_thread.run_sync(source_size, data)
        else:
            expected_size = len(data)
        # The event is checked before the contents are stored (a refused one leaves no
        # blob behind), with their size and a hash of the same length.
        core.state.draft(
            name, file_event_args(FileInfo(file_id, path, "0" * 64, expected_size, metadata))
        )
        try:
            async with self._garbage.saving(file_id):
                # Bulk work, which a cancellation stops between blocks (see _bulk.py).
                content_hash, size = await stoppable_bulk(core.run_store)(self.blobs.put, data)
                info = FileInfo(file_id, path, content_hash, size, metadata)
                # Checked again: the file may have been rewritten before it was opened.
                draft = core.state.draft(name, file_event_args(info))
                deleted = await self._record(file_id, content_hash, draft)
        except BaseException:
            self._reconciler.take_after_save(file_id)  # looked at again right here
            await self._look_again(file_id)
            raise
        if self._reconciler.take_after_save(file_id) or deleted:
            # Facts folded during the save were left to it; or another client's delete
            # came in while the contents were stored: a deleted file stays deleted, so
            # these contents are never wanted. Drop their rows (shielded too: the event
            # is committed, the caller may be cancelled now).
            await self._look_again(file_id)

    async def _record(self, file_id: str, content_hash: str, draft: Draft) -> bool:
        """Records the new contents and, once the event is committed (under the file's
        recording lock), queues their upload; returns True instead when the view says
        the file was deleted meanwhile (nothing to upload then)."""
        deleted = False

        async def recorded() -> None:
            nonlocal deleted
            self._fold.refresh_view()
            current = self._fold.view.files.get(file_id)
            if current is None or current.deleted:
                deleted = True
                return
            self.executor.enqueue("upload", file_id)
            if current.content_hash == content_hash:
                # A download decided before this save began (on a view without it) may
                # have landed over its rows since: this event, ordered after every fact
                # folded so far, makes that download pointless.
                try:
                    await self._reconciler.downloads_done_for_held([(file_id, content_hash)])
                except (StoreError, ClientClosed) as exc:
                    self._reconcile_failed({file_id}, str(exc))

        replaced = await self._recorder.record(file_id, content_hash, draft, then=recorded)
        if replaced is not None:  # a download stopped while it waited: no end drops it
            with trio.CancelScope(shield=True), contextlib.suppress(ClientClosed):
                await self._reconciler.drop_partial(replaced)
        return deleted

    async def _look_again(self, file_id: str) -> None:
        """Reconciles a file after a delete's commit, or after a save that ended without
        queueing an upload: it failed or was cancelled (the reconcile skipped the file
        while the save ran, its rows being ahead of the facts, and its undo may have put
        back rows for contents replaced or deleted meanwhile), or the file was deleted
        meanwhile, or a reconcile left it to the save. Shielded and bounded; a failure is
        traced, and the file is reconciled again until that works
        (``_settle_unsettled``)."""
        if self._closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(LOOK_AGAIN_TIMEOUT) as scope:
            try:
                await self._reconciler.reconcile({file_id})
            except (StoreError, ClientClosed) as exc:
                self._reconcile_failed({file_id}, str(exc))
        if scope.cancelled_caught:
            self._reconcile_failed({file_id}, "timed out")

    def _reconcile_failed(self, files: set[str], error: str) -> None:
        """A reconcile of ``files`` failed: traced, and they are reconciled again later
        (``_settle_unsettled``)."""
        self._core.trace("files.reconcile_failed", files=sorted(files), error=error)
        self._unsettled.note(files)
        self._count_unsettled()

    def _count_unsettled(self) -> None:
        # An unsettled file may owe an upload: the status is not green meanwhile.
        self.executor.unsettled = len(self._unsettled)
        self.executor.counts_changed()

    async def _settle_unsettled(self) -> None:
        """Reconciles the files a failed reconcile left, every ``SETTLE_AGAIN_EVERY``
        seconds until it works; then the transfers are settled up to where the fold
        reconciled."""
        while True:
            await self._unsettled.noted.wait()
            await trio.sleep(SETTLE_AGAIN_EVERY)
            taken = self._unsettled.take()
            try:
                await self._reconciler.reconcile(set(taken))
            except StoreError as exc:
                self._core.trace("files.reconcile_failed", files=len(taken), error=str(exc))
                continue
            self._unsettled.settled(taken)
            self._count_unsettled()
            if not self._unsettled:
                self._fold.settle()
            self._wake()

    async def delete(self, file_id: str) -> None:
        """Deletes a file (on every client, once the event syncs); a transfer of it stops.

        Raises:
            FileNotFound: No such live file.
        """
        await self._view_caught_up()
        self._live(file_id)
        core = self._core
        draft = core.state.draft(FILE_DELETED, {"id": file_id})
        await core.writer.commit([draft])
        self._fold.refresh_view()
        # Committed: the transfers stop and the rows go even if the caller is cancelled.
        await self._look_again(file_id)

    async def read(self, file_id: str) -> bytes:
        """The file's contents, downloading them first if needed (ahead of other
        downloads). Waits through disconnections: bound it with ``trio.fail_after``.

        The local copy is checked against its SHA-256 on every read: a copy that does not
        match is deleted and downloaded again (a ``recovery`` notification says so).

        Raises:
            FileNotFound: No such live file.
            FileTransferError: The download failed for good (retries exhausted), or the
                local copy rotted before its contents were uploaded.
            ClientClosed: The client closed (before, or while this waited).
        """
        await self._view_caught_up()
        #: The contents this read asked to download (the file's may change meanwhile:
        #: new ones are asked for again, with priority; an error counts only for them).
        asked: str | None = None
        while True:
            changed = self._changed
            info = self._live(file_id)
            if self.blobs.has(info.content_hash):
                # Read and hashed in a worker thread: 50 MB takes the loop's time otherwise.
                try:
                    data, digest = await bulk_runner(self._core.run_store)(
                        read_and_hash, self.blobs, info.content_hash
                    )
                except KeyError:
                    # Gone meanwhile (the file deleted or updated, its blob collected):
                    # look again at what the file is now.
                    continue
                upload = self._states.get(file_id, "upload")
                me = self._core.state.client_id
                problem = local_copy_problem(info, len(data), digest, upload, me)
                if problem is None:
                    return data
                if problem.final:
                    raise FileTransferError(f"file {file_id}: {problem.reason}")
                # Rotten (a bad disk, a stray write): never handed out; dropped, then
                # fetched again from the server like any missing copy.
                await self._core.run_store(self.blobs.delete, info.content_hash)
                self._core.notify(
                    "recovery", what="corrupt-local-copy", file_id=file_id, hash=info.content_hash
                )
                asked = None
                continue
            if self._garbage.is_saving(file_id):
                # No download is decided meanwhile (Reconciler.want_downloads): ask
                # once the save has ended, if it recorded nothing.
                await self._until(changed)
                continue
            state = self._states.get(file_id, "download")
            if (
                asked == info.content_hash
                and state is not None
                and state.content_hash == asked
                and state.status == "error"
            ):
                raise FileTransferError(f"file {file_id}: {state.last_error}")
            if asked != info.content_hash:
                wanted = [(file_id, info.content_hash)]
                await self._reconciler.want_downloads(wanted, priority=True, retry_failed=True)
                asked = info.content_hash
            await self._until(changed)

    def local_path(self, file_id: str) -> Path | None:
        """Where the file's current contents are on disk (None if not here yet, or the
        blob store is not on a disk). Read it, never write it."""
        info = self._fold.view.files.get(file_id)
        if info is None or info.deleted:
            return None
        return self.blobs.local_path(info.content_hash)

    def list(self) -> list[FileInfo]:
        """Every file known, deleted ones included (``deleted=True``), by id."""
        return [self._fold.view.files[fid] for fid in sorted(self._fold.view.files)]

    def get(self, file_id: str) -> FileInfo | None:
        return self._fold.view.files.get(file_id)

    def state(self, file_id: str) -> FileState:
        """This client's transfer state of the file (local, never synced)."""
        return FileState(
            upload=self._states.get(file_id, "upload"),
            download=self._states.get(file_id, "download"),
        )

    async def wait_idle(self) -> None:
        """Waits until every file event confirmed when called is folded and its transfers
        queued (right after ``wait_synced()``, the files just learnt count), then until no
        transfer is queued or in flight in either direction.

        Raises:
            ClientClosed: The client closed (before, or while this waited).
        """
        await self._still_open()
        target = self._core.durable_head
        # Files whose reconcile failed (a full disk) count as not settled.
        while self._fold.settled_cursor < target or self._unsettled:
            await self._until(self._changed)
        while True:
            changed = self.executor.changed.event
            if self.executor.is_idle():
                return
            await self._until(changed)

    async def wait_for(self, predicate: Callable[[FileSync], bool]) -> None:
        """Waits until ``predicate(files)`` holds, looking again whenever the files or
        their transfers change (bound it with ``trio.fail_after``).

        Raises:
            ClientClosed: The client closed while this waited.
        """
        while True:
            changed = self._changed
            if predicate(self):
                return
            await self._until(changed)

    def has_contents(self, file_id: str) -> bool:
        """True when the file's current contents are stored here, of the size its facts
        say (contents of another size cannot be its: ``read()`` raises)."""
        info = self._fold.view.files.get(file_id)
        if info is None or info.deleted:
            return False
        return self.blobs.size(info.content_hash) == info.size

    def inject_fault(self, hook: FaultHook | None) -> None:
        """Calls ``hook(direction, file_id)`` as each transfer starts (tests raise there to
        kill a worker)."""
        self.executor.fault = hook

    # --- following the log ----------------------------------------------------------------

    async def _view_caught_up(self) -> None:
        """Waits until the file view has folded every event confirmed when called: just
        after ``wait_synced()``, a file whose event is confirmed is then known."""
        await self._still_open()
        target = self._core.durable_head
        while self._fold.view_cursor < target:
            await self._until(self._changed)

    async def _until(self, changed: trio.Event) -> None:
        """Waits for ``changed``; raises ClientClosed if the client closes meanwhile (its
        close sets every event waited on)."""
        await self._still_open()
        await changed.wait()
        self._check_open()

    async def _still_open(self) -> None:
        """Raises ClientClosed if the client closed, after Cancelled if this is (called in
        a scope torn down with the client, Cancelled is what a Trio function raises)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()

    def _max_values(self) -> int:
        return self._core.state.limits.max_event_bytes  # each value takes a byte at least

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client's open_client() block has exited")
        self._core.check_run()

    def _live(self, file_id: str) -> FileInfo:
        if not isinstance(file_id, str):
            raise TypeError(f"a file id is a str, not {type(file_id).__name__}")
        info = self._fold.view.files.get(file_id)
        if info is None or info.deleted:
            raise FileNotFound(f"no file {file_id!r}")
        return info

    async def _follow(self) -> None:
        while True:
            # Merges with file events only: this FileSync refreshes the view itself after
            # its own commits, and merges of other events only move its cursor.
            event = self._fold.wanted.event
            changed = await self._fold.catch_up()
            folded = self._fold.view_cursor
            if changed:
                try:
                    await self._reconciler.reconcile(changed)
                except StoreError as exc:
                    # A full disk, say: the facts are folded, the transfers not in line
                    # with them yet.
                    self._reconcile_failed(changed, str(exc))
            self._fold.followed_cursor = max(self._fold.followed_cursor, folded)
            if not self._unsettled and self._fold.settle():
                self._wake()
            await event.wait()

    def _needed_blobs(self) -> set[str]:
        """The contents of live files, and of uploads still to go (not garbage)."""
        # The view, not the confirmed table: once this client's pending update or delete
        # is confirmed it is the last word, so the contents it replaced are never needed.
        return self._fold.view.live_hashes() | self._states.uploads_to_go()

    def _target(self, direction: Direction, file_id: str) -> tuple[str, int] | None:
        state = self._states.get(file_id, direction)
        info = self._fold.view.files.get(file_id)
        if state is None or state.status == "done":
            return None
        if direction == "download":
            if info is None or info.deleted or info.content_hash != state.content_hash:
                return None
            return info.content_hash, info.size
        size = self.blobs.size(state.content_hash)
        return None if size is None else (state.content_hash, size)

    async def _transfer_finished(
        self, direction: Direction, file_id: str, content_hash: str
    ) -> None:
        if direction == "download":
            # A download stopped because its file was deleted (or its contents replaced)
            # leaves a partial no file needs; now that its last write is done, it goes.
            await self._reconciler.drop_partial(content_hash)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
