"""File contents on the server: blob stores per sync store, and the blob connection.

A blob connection opens with a ``blob_hello`` instead of a ``hello`` on the same URL (so
the same listener, TLS, path and token rules apply); see ``protocol/_blob_messages.py``
for the conversation. The server keeps blobs behind :class:`BlobBackend`: one
:class:`~trio_sync.files.BlobStore` per sync store. :class:`FileBlobBackend` keeps them
in a directory; an object store (S3 and the like) fits the same interface: ``partial``
uploads map to multipart uploads (``append_partial`` = upload part, ``finish_partial`` =
complete and compare the checksum), ``read`` to ranged GETs, and several server nodes
then share one bucket as they share one database.

Nothing a client sends can poison stored data: a chunk must match its digest and land
exactly where the partial ends, a blob is published only once its bytes match its hash,
sizes are bounded by :class:`BlobLimits`, and a connection only reaches the store its
token names. Nothing a disk does goes unseen for ever either: a stored blob is hashed again
when its upload begins anew and when it is served whole, and one that no longer matches is
set aside (see ``_blob_upkeep.py``, which also keeps each store within its quota).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import attrs
import trio

from .._errors import ConnectionClosed, ProtocolError, StoreError, StoreFull, TrioSyncError
from ..files._blobs import Fingerprint, ServerBlobStore
from ..files._bulk import bulk_runner
from ..files._chunks import CorruptChunk, append_chunk, read_chunk
from ..protocol import Error, Message, TokenError, protocol_problem
from ..protocol._blob_messages import (
    NOT_THE_UPLOADERS_BYTES,
    BlobCheck,
    BlobCheckResult,
    BlobChunk,
    BlobCorrupt,
    BlobHello,
    BlobRefused,
    BlobWelcome,
    DownloadBegin,
    DownloadInfo,
    UploadBegin,
    UploadDone,
    UploadEnd,
    UploadOffset,
)
from ..store import store_for_target
from ..transport import Connection
from ._blob_backends import BlobBackend, BlobLimits
from ._blob_garbage import problem_after_collecting
from ._blob_upkeep import (
    StoreUpkeep,
    check_blob,
    quota_problem,
    touch,
    upkeep,
    weigh,
)
from ._hub import Hub
from ._session import ServerSession, loggable

logger = logging.getLogger("trio_sync.server")


class _Peeked:
    """A connection whose first message was already received (by :func:`handle`)."""

    def __init__(self, conn: Connection, first: Message | BaseException | None) -> None:
        self._conn = conn
        self._first = first
        self.target, self.peer, self.opened_at = conn.target, conn.peer, conn.opened_at

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def admit(self) -> None:
        self._conn.admit()

    async def send(self, message: Message) -> None:
        await self._conn.send(message)

    def queues_at_once(self, kind: type[Message]) -> bool:
        return self._conn.queues_at_once(kind)

    async def wait_room_for_page(self) -> bool:
        return await self._conn.wait_room_for_page()

    async def receive(self) -> Message:
        first, self._first = self._first, None
        if isinstance(first, BaseException):
            raise first
        if first is not None:
            await trio.lowlevel.checkpoint()
            return first
        return await self._conn.receive()

    async def aclose(self, reason: str = "", *, code: int = 1000) -> None:
        await self._conn.aclose(reason, code=code)


async def handle(conn: Connection, hub: Hub, blobs: BlobBackend | None, limits: BlobLimits) -> None:
    """Serves one accepted connection: a blob connection if it says ``blob_hello``, a sync
    connection otherwise. Never raises."""
    first: Message | BaseException | None = None
    with trio.move_on_at(conn.opened_at + hub.config.limits.hello_timeout):
        try:
            first = await conn.receive()
        except (ConnectionClosed, ProtocolError) as exc:
            first = exc
    if isinstance(first, BlobHello):
        await BlobSession(conn, hub, blobs, limits).run(first)
    else:
        await ServerSession(_Peeked(conn, first), hub).run()


#: Seconds during which a blob found sound is not hashed again on a client's report.
RECHECK_AFTER = 60.0


def _lacking(store: ServerBlobStore, hashes: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``hashes`` the store does not hold (each once, in the order asked)."""
    return tuple(
        content_hash for content_hash in dict.fromkeys(hashes) if not store.has(content_hash)
    )


class _Refused(Exception):
    """``later``: what the transfer needs is coming (room in the quota): the client
    retries without counting it as a failure."""

    def __init__(self, reason: str, *, fatal: bool = False, later: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal
        self.later = later


@attrs.define
class _Upload:
    hash: str
    size: int
    offset: int


class BlobSession:
    """One blob connection: uploads and downloads of one store's blobs, one at a time."""

    def __init__(
        self, conn: Connection, hub: Hub, blobs: BlobBackend | None, limits: BlobLimits
    ) -> None:
        self._conn = conn
        self._hub = hub
        self._backend = blobs
        self._limits = limits
        # Chunks, hashes and fsyncs: bulk work, behind the event sync (see files/_bulk.py).
        self._run = bulk_runner(hub.run_store)
        self.client_id = "?"
        self.store_id = "?"

    async def run(self, hello: BlobHello) -> None:
        reason = ""
        try:
            store = await self._authorize(hello)
            self._conn.admit()
            await self._conn.send(
                BlobWelcome(
                    chunk_bytes=self._limits.chunk_bytes,
                    max_blob_bytes=self._limits.max_blob_bytes,
                )
            )
            metrics = self._hub.metrics
            metrics.blob_connections_opened.inc()
            metrics.blob_connections.inc()
            try:
                await self._serve(store)
            finally:
                metrics.blob_connections.dec()
        except _Refused as refusal:
            reason = refusal.reason
            logger.info("refused a blob connection from %s: %s", self._conn.peer, loggable(reason))
            await self._try_send(Error(reason, fatal=refusal.fatal))
        except ConnectionClosed as exc:
            reason = str(exc)
        except ProtocolError as exc:
            reason = str(exc)
            await self._try_send(Error(reason))
        except StoreError as exc:
            reason = f"server storage failed: {exc}"
            logger.error("blob connection of %r: %s", self.client_id, reason)
            await self._try_send(Error(reason))
        except Exception:
            # A bug here must cost one connection, never the whole server.
            reason = "internal server error"
            logger.exception("blob connection of %r: unexpected error", self.client_id)
            await self._try_send(Error(reason))
        finally:
            await self._conn.aclose(reason)

    async def _authorize(self, hello: BlobHello) -> ServerBlobStore:
        hub = self._hub
        self.client_id = hello.client_id
        if hub.draining:
            raise _Refused("the server is shutting down")
        store_id = store_for_target(self._conn.target)
        if store_id is None:
            raise _Refused(f"no store at path {self._conn.target[:80]!r}", fatal=True)
        self.store_id = store_id
        problem = protocol_problem(hello)
        if problem is not None:
            raise _Refused(problem, fatal=True)
        try:
            hub.authorize(hello.token, store_id=store_id, client_id=hello.client_id)
        except TokenError as exc:
            raise _Refused(f"not authorized: {exc}", fatal=True) from None
        if self._backend is None:
            raise _Refused(
                "this server does not store files (a server on PostgreSQL needs "
                "--blob-dir on storage all its nodes share)",
                fatal=True,
            )
        if await hub.run_store(hub.db.store, store_id) is None:
            raise _Refused(f"store {store_id!r} does not exist on this server", fatal=True)
        return self._backend.store(store_id)

    async def _receive(self) -> Message:
        with trio.move_on_after(self._hub.config.limits.idle_timeout):
            return await self._conn.receive()
        raise ConnectionClosed("idle: nothing received in time (idle_timeout)")

    async def _serve(self, store: ServerBlobStore) -> None:
        care = upkeep(store)
        upload: _Upload | None = None  # counted in care.receiving while it lasts
        try:
            while True:
                message = await self._receive()
                if upload is not None and not isinstance(message, (BlobChunk, UploadEnd)):
                    # Another transfer begins: this upload is given up (and its room freed
                    # before the next one is weighed against the quota).
                    care.end_upload(upload.hash)
                    upload = None
                after = await self._serve_one(store, upload, message)
                if upload is not None and after is not upload:
                    care.end_upload(upload.hash)
                upload = after
        finally:
            if upload is not None:
                care.end_upload(upload.hash)

    async def _serve_one(
        self, store: ServerBlobStore, upload: _Upload | None, message: Message
    ) -> _Upload | None:
        """Answers one message; returns the upload in progress after it (a new one is
        counted in :func:`upkeep`'s ``receiving`` already)."""
        try:
            if isinstance(message, UploadBegin):
                return await self._begin_upload(store, message)
            if isinstance(message, BlobChunk):
                if upload is None or message.hash != upload.hash:
                    raise _Refused("a chunk of no upload in progress")
                await self._chunk(store, upload, message)
                return upload
            if isinstance(message, UploadEnd):
                await self._end_upload(store, upload, message)
                return None
            if isinstance(message, DownloadBegin):
                await self._download(store, message)
                return None
            if isinstance(message, BlobCheck):
                missing = await self._run(_lacking, store, message.hashes)
                await self._conn.send(BlobCheckResult(missing=missing))
                return None
            if isinstance(message, BlobCorrupt):
                await self._corrupt_reported(store, message.hash)
                return None
            if isinstance(message, Error):
                raise ConnectionClosed(f"client closed: {message.reason}")
            raise ProtocolError(f"a blob connection does not carry {message.TYPE!r}")
        except _Refused as refusal:
            # The transfer ends; the connection stays usable for another one.
            blob = getattr(message, "hash", None)
            if not isinstance(blob, str):
                raise
            await self._conn.send(
                BlobRefused(
                    blob, refusal.reason, retryable=not refusal.fatal, missing=refusal.later
                )
            )
        except StoreFull as exc:
            blob = str(getattr(message, "hash", "0" * 64))
            await self._conn.send(BlobRefused(blob, f"the server's storage is full: {exc}"))
        return None

    async def _begin_upload(self, store: ServerBlobStore, begin: UploadBegin) -> _Upload | None:
        if begin.size > self._limits.max_blob_bytes:
            raise _Refused(
                f"{begin.size} bytes is over the limit max_blob_bytes="
                f"{self._limits.max_blob_bytes}",
                fatal=True,
            )
        if begin.size == 0 and not await self._run(store.has, begin.hash):
            # Nothing to send: the empty blob is published at once (if that is its hash).
            content_hash, _ = await self._run(store.put, b"")
            if content_hash != begin.hash:
                raise _Refused("an empty blob has another hash", fatal=True)
        care = upkeep(store)
        care.asked.note(begin.hash)
        if care.collecting:
            async with care.begin_lock:  # "stored already" only once it stays so
                pass
        held = await self._sound_size(store, care, begin.hash)
        if held is not None and held != begin.size:
            raise _Refused(f"that blob has {held} bytes, not {begin.size}", fatal=True)
        if held is not None and await self._touch(store, care, begin.hash):
            await self._conn.send(UploadOffset(hash=begin.hash, offset=held))
            return None
        offset = await self._take_upload(store, care, begin)
        try:
            if offset == begin.size:
                # Every byte came in an attempt whose connection dropped before its
                # upload_end. "offset == size" tells the client the blob is stored: so it
                # is published now (or, not matching, discarded and sent again).
                if await self._publish(store, begin.hash, begin.size):
                    await self._conn.send(UploadOffset(hash=begin.hash, offset=offset))
                    care.end_upload(begin.hash)
                    return None
                offset = 0
            await self._conn.send(UploadOffset(hash=begin.hash, offset=offset))
        except BaseException:
            care.end_upload(begin.hash)
            raise
        return _Upload(begin.hash, begin.size, offset)

    async def _sound_size(
        self, store: ServerBlobStore, care: StoreUpkeep, content_hash: str
    ) -> int | None:
        """The size of the stored blob ``content_hash`` once it is known to match its hash
        (hashed here unless this process found this version sound before); None when it
        is not stored, or was found corrupt and moved aside."""
        fingerprint = await self._run(store.fingerprint, content_hash)
        if fingerprint is None:
            return None
        if care.is_verified(content_hash, fingerprint):
            return fingerprint[0]
        return await self._check(store, care, content_hash, "an upload of it began")

    async def _check(
        self, store: ServerBlobStore, care: StoreUpkeep, content_hash: str, why: str
    ) -> int | None:
        """Hashes the stored blob (in a worker thread) and moves it aside when it does not
        match; returns its size when it is held and sound, None otherwise."""
        verdict, fingerprint = await self._run(check_blob, store, content_hash)
        if verdict == "sound" and fingerprint is not None:
            care.mark_verified(content_hash, fingerprint, trio.current_time())
            return fingerprint[0]
        if verdict == "quarantined":
            self._quarantined(content_hash, why)
            return None
        # Missing, or published again while it was read (by whoever hashed it then).
        return await self._run(store.size, content_hash)

    def _quarantined(self, content_hash: str, why: str) -> None:
        logger.warning(
            "store %r: blob %s does not match its hash (found when %s): moved aside to "
            "corrupt/; the next upload of those contents stores them again",
            self.store_id,
            content_hash,
            why,
        )

    async def _take_upload(
        self, store: ServerBlobStore, care: StoreUpkeep, begin: UploadBegin
    ) -> int:
        """Decides whether the upload fits in the store's quota and counts it (reserving
        its declared size); returns the offset it resumes at.

        Raises:
            _Refused: It does not fit (for good: the client shows it as stuck).
        """
        async with care.begin_lock:
            # Abandoned partials go first (never one this node is receiving): they must
            # not count against the quota for ever.
            weighed = await weigh(
                store,
                care,
                self._limits,
                self._run,
                list_blobs=False,
                needed=begin.size,
                background=not self._hub.draining,
            )
            if weighed.expired:
                logger.info(
                    "store %r: deleted %d abandoned upload partial(s), unwritten for %gs",
                    self.store_id,
                    len(weighed.expired),
                    self._limits.partial_max_age,
                )
            receiving = care.sizes.get(begin.hash)
            if receiving is not None and receiving != begin.size:
                # A blob has one size: this session's, or the one being received, lies
                # (discarding the partial under the other upload would wreck it).
                raise _Refused(f"that blob is being uploaded with {receiving} bytes", fatal=True)
            usage, reserved = weighed.usage, weighed.reserved
            offset = usage.partials.get(begin.hash, 0)
            if offset > begin.size:
                await self._run(store.discard_partial, begin.hash)
                partials = {k: v for k, v in usage.partials.items() if k != begin.hash}
                usage, offset = attrs.evolve(usage, partials=partials), 0
            quota = self._limits.max_store_bytes
            problem = quota_problem(usage, reserved, begin.hash, begin.size, quota)
            if problem is not None and weighed.trusted:
                # Only a listing refuses: the trusted figure may count blobs deleted since.
                weighed = await weigh(
                    store, care, self._limits, self._run, list_blobs=True, needed=begin.size
                )
                usage, reserved = weighed.usage, weighed.reserved
                problem = quota_problem(usage, reserved, begin.hash, begin.size, quota)
            later = False
            if problem is not None and begin.size <= quota:  # else it can never fit
                problem, later = await problem_after_collecting(
                    self._hub,
                    self.store_id,
                    store,
                    care,
                    begin,
                    self._limits,
                    self._run,
                    (usage, reserved),
                )
            if problem is not None:
                logger.info(
                    "refused an upload of %d bytes by %r to store %r: %s",
                    begin.size,
                    self.client_id,
                    self.store_id,
                    problem,
                )
                raise _Refused(problem, fatal=not later, later=later)
            care.start_upload(begin.hash, begin.size)
        return offset

    async def _chunk(self, store: ServerBlobStore, upload: _Upload, chunk: BlobChunk) -> None:
        if chunk.offset != upload.offset:
            raise _Refused(f"chunk at offset {chunk.offset}, expected {upload.offset}")
        size = len(chunk.data)
        if size > self._limits.chunk_bytes or not size:
            raise _Refused(f"a chunk holds 1 to {self._limits.chunk_bytes} bytes (chunk_bytes)")
        if upload.offset + size > upload.size:
            raise _Refused(f"chunks run past the declared size {upload.size}")
        try:
            # The digest check and the write: one hop off the event loop.
            await self._run(append_chunk, store, chunk)
        except CorruptChunk as exc:
            raise _Refused(f"corrupt chunk refused: {exc}") from None
        except ValueError as exc:
            raise _Refused(f"{NOT_THE_UPLOADERS_BYTES[1]}: {exc}") from None
        upload.offset += size

    async def _end_upload(
        self, store: ServerBlobStore, upload: _Upload | None, end: UploadEnd
    ) -> None:
        if upload is None or upload.hash != end.hash:
            raise _Refused("the end of no upload in progress")
        if upload.offset != upload.size:
            raise _Refused(f"truncated upload: {upload.offset} of {upload.size} bytes")
        if not await self._publish(store, end.hash, upload.size):
            raise _Refused(f"{NOT_THE_UPLOADERS_BYTES[0]}: discarded, upload again")
        await self._conn.send(UploadDone(hash=end.hash))

    async def _touch(self, store: ServerBlobStore, care: StoreUpkeep, content_hash: str) -> bool:
        """Restarts the stored blob's age on disk: told "stored", a client sends nothing,
        and its event may come later, so no collection (on any node sharing the store, or
        this one restarted) may take the blob meanwhile. False when the blob is gone (then
        it is uploaded again). When it was last found sound stays as it was: a touch is no
        check (a rotten blob must not pass for a checked one)."""
        before, after = await self._run(touch, store, content_hash)
        if after is None:
            return False
        checked_at = None if before is None else care.verified_at(content_hash, before)
        if checked_at is not None:
            care.mark_verified(content_hash, after, checked_at)
        return True

    async def _publish(self, store: ServerBlobStore, content_hash: str, size: int) -> bool:
        """Publishes the whole partial of ``content_hash`` (``size`` bytes) if its bytes
        match (else it is discarded); True when it was."""
        # Read back and hashed here, never trusted from a running hash: another session
        # (a hostile one included) may have discarded and rewritten this partial between
        # our last chunk and now; what is published is what was hashed.
        try:
            published = await self._run(store.finish_partial, content_hash)
        except StoreError:
            upkeep(store).measure.forget()  # the rename may have happened: not counted
            raise
        if not published:
            if await self._run(store.has, content_hash):
                return True  # another session published the same bytes first (it hashed them)
            logger.info(
                "client %r of store %r uploaded bytes that do not match %s: discarded",
                self.client_id,
                self.store_id,
                content_hash,
            )
            return False
        # Counted as soon as the hop that published it returns (a cancel waits for it).
        care = upkeep(store)
        care.measure.published(size)
        # Its age starts now, not at the partial's last write (see _touch).
        _, fingerprint = await self._run(touch, store, content_hash)
        if fingerprint is not None:  # just hashed: no need to hash it again soon
            care.mark_verified(content_hash, fingerprint, trio.current_time())
        return True

    async def _download(self, store: ServerBlobStore, begin: DownloadBegin) -> None:
        fingerprint = await self._run(store.fingerprint, begin.hash)
        if fingerprint is None:
            fingerprint = await self._wait_for_upload(store, begin)
        if fingerprint is None:
            await self._conn.send(
                BlobRefused(begin.hash, "the server does not hold that blob", missing=True)
            )
            return
        size = fingerprint[0]
        await self._conn.send(DownloadInfo(hash=begin.hash, size=size))
        offset = min(begin.offset, size)
        # Served whole, the blob is hashed as it is read (in the same worker-thread hop as
        # each chunk): a blob that rotted on this disk is caught here, not only by every
        # client that downloads it.
        hasher = hashlib.sha256() if offset == 0 else None
        step = self._limits.chunk_bytes
        while offset < size:
            try:
                chunk = await self._run(
                    read_chunk, store, begin.hash, offset, min(step, size - offset), hasher
                )
            except KeyError:
                raise ConnectionClosed("the blob went away during the download") from None
            # One chunk queued at most (bulk): a slow reader holds one chunk of memory.
            await self._conn.send(chunk)
            offset += len(chunk.data)
        if hasher is not None:
            await self._served_whole(store, begin.hash, fingerprint, hasher.hexdigest())

    async def _served_whole(
        self, store: ServerBlobStore, content_hash: str, fingerprint: Fingerprint, digest: str
    ) -> None:
        care = upkeep(store)
        if digest == content_hash:
            care.mark_verified(content_hash, fingerprint, trio.current_time())
            return
        # Moved aside only if it is still the version that was read: one written again
        # meanwhile (a mixed read) is left alone.
        if await self._run(lambda: store.quarantine(content_hash, expect=fingerprint)):
            self._quarantined(content_hash, "a download read it whole")

    async def _corrupt_reported(self, store: ServerBlobStore, content_hash: str) -> None:
        """A client says the bytes it downloaded of ``content_hash`` do not match: hash
        our copy (unless this version was found sound in the last
        :data:`RECHECK_AFTER` seconds: a client cannot make the server hash a blob over and
        over), move it aside if it does not match, and say whether we still hold it."""
        care = upkeep(store)
        fingerprint = await self._run(store.fingerprint, content_hash)
        held: int | None = None
        if fingerprint is not None:
            checked = care.verified_at(content_hash, fingerprint)
            if checked is not None and trio.current_time() - checked < RECHECK_AFTER:
                held = fingerprint[0]
            else:
                why = f"client {self.client_id!r} reported a corrupt download"
                held = await self._check(store, care, content_hash, why)
        missing = (content_hash,) if held is None else ()
        await self._conn.send(BlobCheckResult(missing=missing))

    async def _wait_for_upload(
        self, store: ServerBlobStore, begin: DownloadBegin
    ) -> Fingerprint | None:
        """While this node receives the blob's upload, waits (up to the client's ``wait``
        and ``download_wait``) for it to end; returns the blob's fingerprint once it is
        stored, None when it is not."""
        uploads = upkeep(store)
        wait = min(float(begin.wait), self._limits.download_wait)
        with trio.move_on_after(wait):
            while uploads.receiving[begin.hash] > 0 and not self._hub.draining:
                changed = uploads.changed.event
                fingerprint = await self._run(store.fingerprint, begin.hash)
                if fingerprint is not None:
                    return fingerprint
                await changed.wait()
        return await self._run(store.fingerprint, begin.hash)

    async def _try_send(self, message: Message) -> None:
        with (
            trio.CancelScope(deadline=trio.current_time() + 1, shield=True),
            contextlib.suppress(TrioSyncError),
        ):
            await self._conn.send(message)
