"""One blob transfer over a blob connection (the client's side of the conversation).

Transfers never share a connection with the event sync, nor with each other, so nothing
waits behind a large file (see ``protocol/_blob_messages.py``). A worker keeps its own
connection while it has transfers back to back (:class:`WorkerConnection`): connecting,
the WebSocket handshake and the hello cost about as much as a small file's whole transfer.
Chunks are read from disk and sent one at a time (the connection queues one at most), so
memory stays at a few chunks whatever the file's size. A chunk's disk I/O and SHA-256
take one hop to the store runner together (``_chunks.py``); the event loop only moves
bytes. With a :class:`TransferPacer`, each chunk first yields to the
client's event sync while it has work in flight (``_pacing.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import NoReturn, Protocol

import trio

from .._errors import ConnectionClosed, ProtocolError, StoreError, TransportError, TrioSyncError
from .._store_runner import StoreRunner
from ..protocol import PROTOCOL_VERSION, Error, Message
from ..protocol._blob_messages import (
    MAX_CHECK_HASHES,
    MAX_DOWNLOAD_WAIT,
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
    refused_for_others_bytes,
)
from ..transport import Connection
from ._blobs import BlobStore
from ._chunks import append_chunk, finish, hash_stored, new_hasher, read_chunk
from ._model import size_problem
from ._pacing import TransferPacer

#: Opens a new connection to the server (the client's connector, bound to its URL).
OpenConnection = Callable[[], AbstractAsyncContextManager[Connection]]
#: Reports progress: (bytes done, bytes in all).
Progress = Callable[[int, int], None]
#: A blob connection past its hello: the connection and the server's welcome.
Session = tuple[Connection, BlobWelcome]


class SyncGate(Protocol):
    """What transfers yield to: the event sync of their client."""

    @property
    def busy(self) -> bool:
        """True while the event sync has work in flight."""
        ...

    async def wait_idle(self, deadline: float) -> None:
        """Returns once the event sync is idle, or at ``deadline`` (Trio time)."""


class TransferFailed(TrioSyncError):
    """One attempt of a transfer failed. ``missing``: the server does not hold the blob
    (yet); ``retryable``: another attempt may succeed; ``connection_lost``: the connection
    closed or broke (no verdict of the server's); ``connection_usable``: the server refused
    the transfer in answer to its first message, so the conversation ended cleanly and
    the connection can carry the next transfer; ``counted``: False when the attempt
    failed for no fault of this transfer (an upload's bytes refused while the local copy
    is sound: it resumed onto bytes another client left, or raced an upload of the same
    contents), so it does not count against ``max_attempts`` (unless the attempt before
    failed that way too)."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = True,
        missing: bool = False,
        connection_lost: bool = False,
        connection_usable: bool = False,
        counted: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.missing = missing
        self.connection_lost = connection_lost
        self.connection_usable = connection_usable
        self.counted = counted


class BlobClient:
    """Runs transfers for one client: connects, says hello, moves one blob."""

    def __init__(
        self,
        connect: OpenConnection,
        client_id: str,
        token: Callable[[], Awaitable[str | None]],
        blobs: BlobStore,
        run_store: StoreRunner,
        *,
        timeout: float,
        gate: SyncGate | None = None,
    ) -> None:
        self._connect = connect
        self._gate = gate
        self._client_id = client_id
        self._token = token
        self._blobs = blobs
        self._run = run_store
        self._timeout = timeout

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        """A new blob connection past its hello, closed at the end.

        Raises:
            TransferFailed: It could not be opened, or failed while in use.
        """
        try:
            async with self._connect() as conn:
                yield conn, await self._hello(conn)
        except TransportError as exc:
            raise TransferFailed(str(exc), connection_lost=True) from None
        except ProtocolError as exc:
            raise TransferFailed(str(exc)) from None

    async def _hello(self, conn: Connection) -> BlobWelcome:
        token = await self._token()
        await conn.send(
            BlobHello(protocol_version=PROTOCOL_VERSION, client_id=self._client_id, token=token)
        )
        welcome = await self._receive(conn)
        if not isinstance(welcome, BlobWelcome):
            raise ProtocolError(f"expected 'blob_welcome', got {welcome.TYPE!r}")
        return welcome

    @asynccontextmanager
    async def _use(self, session: Session | None) -> AsyncIterator[Session]:
        """``session`` (a worker's own connection, left open), or a new one of its own.

        Raises:
            TransferFailed: The connection failed while in use.
        """
        if session is None:
            async with self._session() as opened:
                yield opened
            return
        try:
            yield session
        except TransportError as exc:
            raise TransferFailed(str(exc), connection_lost=True) from None
        except ProtocolError as exc:
            raise TransferFailed(str(exc)) from None

    async def _receive(self, conn: Connection, *, answering_begin: bool = False) -> Message:
        """The server's next message; a refusal raises. ``answering_begin``: it answers
        the transfer's first message, so a refusal ends the conversation cleanly.

        Raises:
            TransferFailed: The server refused.
            ConnectionClosed: No answer in time, or the connection closed.
        """
        with trio.move_on_after(self._timeout):
            message = await conn.receive()
            if isinstance(message, Error):
                raise TransferFailed(
                    f"the server refused: {message.reason}", retryable=not message.fatal
                )
            if isinstance(message, BlobRefused):
                raise TransferFailed(
                    f"the server refused: {message.reason}",
                    retryable=message.retryable,
                    missing=message.missing,
                    connection_usable=answering_begin,
                )
            return message
        raise ConnectionClosed(f"no answer from the server within {self._timeout:g}s")

    async def holds(self, content_hash: str) -> bool:
        """True when the local store holds ``content_hash``: a download of it ends at
        once, without a connection."""
        return await self._run(self._blobs.has, content_hash)

    async def _pace(self, pacer: TransferPacer | None) -> None:
        """Holds the next chunk while the event sync is busy, as ``pacer`` allows."""
        gate = self._gate
        if pacer is None or gate is None:
            return
        until = pacer.before_chunk(trio.current_time(), busy=gate.busy)
        if until is not None:
            await gate.wait_idle(until)
            pacer.resumed(trio.current_time())

    async def upload(
        self,
        content_hash: str,
        size: int,
        progress: Progress,
        pacer: TransferPacer | None = None,
        session: Session | None = None,
    ) -> None:
        """Uploads the local blob ``content_hash``, resuming where the server stopped.
        Each chunk is read and sent once ``pacer`` allows. On ``session`` when given (it
        stays open), else on a connection of its own.

        Raises:
            TransferFailed: The attempt failed (the reason says why).
            StoreError: The local blob cannot be read.
        """
        async with self._use(session) as (conn, welcome):
            if size > welcome.max_blob_bytes:
                raise TransferFailed(
                    f"{size} bytes is over the server's limit of {welcome.max_blob_bytes}",
                    retryable=False,
                )
            await conn.send(UploadBegin(hash=content_hash, size=size))
            answer = await self._receive(conn, answering_begin=True)
            if not isinstance(answer, UploadOffset) or answer.hash != content_hash:
                raise ProtocolError("expected 'upload_offset' for this blob")
            offset = answer.offset
            if offset > size:
                raise ProtocolError(f"the server holds {offset} bytes of a {size}-byte blob")
            progress(offset, size)
            if offset == size:
                return  # the server holds it already (another client's, or ours)
            chunk_bytes = max(1, welcome.chunk_bytes)
            while offset < size:
                # Before the read: the chunk's disk read, its send and the server's write
                # all wait while an event is on its way.
                await self._pace(pacer)
                try:
                    chunk = await self._run(
                        read_chunk,
                        self._blobs,
                        content_hash,
                        offset,
                        min(chunk_bytes, size - offset),
                    )
                except KeyError:
                    raise StoreError(f"local blob {content_hash} went away") from None
                # Queued at once while the previous chunk is still being written: the
                # next read overlaps the socket.
                await conn.send(chunk)
                offset += len(chunk.data)
                progress(offset, size)
            await conn.send(UploadEnd(hash=content_hash))
            try:
                done = await self._receive(conn)
            except TransferFailed as refused:
                # Refused at the end (the bytes did not match, say): if the local copy
                # rotted, no attempt can ever succeed. Say so, once, instead of retrying.
                if not await self._run(_local_copy_matches, self._blobs, content_hash, size):
                    raise TransferFailed(
                        "the local copy of these contents is corrupt (its bytes no longer "
                        "match their hash): they cannot be uploaded from here; save the "
                        "file again",
                        retryable=False,
                    ) from None
                if not refused.retryable or not refused_for_others_bytes(refused.reason):
                    raise  # the server's storage, say: counted, so that it gives up
                # The bytes sent were sound: what failed was the server's partial (bytes
                # another client left, an upload of the same contents racing this one).
                # Nobody may spend this upload's attempts that way (twice in a row they
                # count: TransferQueue.last_failure_uncounted).
                raise TransferFailed(
                    f"{refused.reason} (the local copy is sound: not counted, unless the "
                    "attempt before was refused so too)",
                    counted=False,
                ) from None
            if not isinstance(done, UploadDone) or done.hash != content_hash:
                raise ProtocolError("expected 'upload_done' for this blob")

    async def download(
        self,
        content_hash: str,
        size: int,
        progress: Progress,
        pacer: TransferPacer | None = None,
        session: Session | None = None,
    ) -> int:
        """Downloads the blob ``content_hash`` of ``size`` bytes (as the file's facts say)
        into the local store, resuming a partial download; returns its size. Each chunk is
        written (and, every few MiB, synced) once ``pacer`` allows; meanwhile the next ones
        wait in the connection. A server announcing another size is refused before a byte
        is written: the facts bound what the disk takes. On ``session`` when given (it
        stays open), else on a connection of its own.

        Raises:
            TransferFailed: The attempt failed (``missing``: the server lacks the blob).
            StoreError: The local store cannot be written (a full disk).
        """
        blobs, run = self._blobs, self._run
        held = await run(blobs.size, content_hash)
        problem = size_problem(held, size)
        if problem is not None:
            raise TransferFailed(problem, retryable=False)
        if held is not None:
            # Another file with the same contents brought it meanwhile.
            progress(held, held)
            return held
        async with self._use(session) as (conn, _):
            offset = await run(blobs.partial_size, content_hash)
            # The server may hold its answer while the blob's upload is in progress (the
            # fact travels faster than the contents): half our patience, so that its
            # answer still arrives in time.
            wait = min(int(self._timeout / 2), MAX_DOWNLOAD_WAIT)
            await conn.send(DownloadBegin(hash=content_hash, offset=offset, wait=wait))
            info = await self._receive(conn, answering_begin=True)
            if not isinstance(info, DownloadInfo) or info.hash != content_hash:
                raise ProtocolError("expected 'download_info' for this blob")
            if info.size != size:
                await self._wrong_size(content_hash, info.size, size)
            if offset > size:
                await run(blobs.discard_partial, content_hash)
                raise TransferFailed("the partial download is longer than the blob")
            progress(offset, size)
            hasher = new_hasher(offset)
            while offset < size:
                chunk = await self._receive(conn)
                if not isinstance(chunk, BlobChunk) or chunk.hash != content_hash:
                    raise ProtocolError("expected a chunk of this blob")
                if chunk.offset != offset:
                    raise ProtocolError(f"chunk at {chunk.offset}, expected {offset}")
                if not chunk.data or offset + len(chunk.data) > size:
                    raise ProtocolError("a chunk runs past the blob's end")
                await self._pace(pacer)
                try:
                    await run(append_chunk, blobs, chunk, hasher)  # checks the digest first
                except ValueError as exc:  # another writer moved the partial meanwhile
                    raise TransferFailed(f"the partial download moved on: {exc}") from None
                offset += len(chunk.data)
                progress(offset, size)
            if not await run(finish, blobs, content_hash, hasher):
                if await self._report_corrupt(conn, content_hash):
                    raise TransferFailed(
                        "the downloaded bytes do not match the hash; the server found its "
                        "copy corrupt and set it aside: waiting for the file to be uploaded "
                        "again",
                        missing=True,
                    )
                raise TransferFailed("the downloaded bytes do not match the hash; discarded")
            return size

    async def _report_corrupt(self, conn: Connection, content_hash: str) -> bool | None:
        """Tells the server the bytes it sent of ``content_hash`` do not match (it checks
        its copy); True when it no longer holds the blob, False when its copy is sound,
        None when the report failed (only lost: the next attempt reports again)."""
        try:
            await conn.send(BlobCorrupt(hash=content_hash))
            answer = await self._receive(conn)
        except (TransportError, ProtocolError, TransferFailed):
            return None
        if not isinstance(answer, BlobCheckResult):
            return None
        return content_hash in answer.missing

    async def _wrong_size(self, content_hash: str, offered: int, size: int) -> NoReturn:
        """The server offers ``offered`` bytes of a blob the file's facts say is ``size``:
        its copy rotted (truncated, extended), or the facts lie (an event committed with
        a wrong size), or the server does. The server checks its copy, asked on a
        connection of its own (this one is streaming the blob): rotten, it is set aside
        and uploaded again by a client that holds it (waited for, like any missing blob);
        sound, no attempt can succeed.

        Raises:
            TransferFailed: Always (which of the three, the reason says).
        """
        refused = f"the server offers {offered} bytes for a blob of {size}"
        try:
            async with self._use(None) as (conn, _):
                set_aside = await self._report_corrupt(conn, content_hash)
        except (TransportError, ProtocolError, TransferFailed):
            set_aside = None
        if set_aside:
            raise TransferFailed(
                f"{refused}; the server found its copy corrupt and set it aside: waiting "
                "for the file to be uploaded again",
                missing=True,
            )
        if set_aside is None:
            raise TransferFailed(f"{refused}: refused (its copy could not be checked)")
        raise TransferFailed(
            f"{refused}, and says its copy is sound: the file's event names a wrong size "
            "for these contents (or the server is faulty); not tried again",
            retryable=False,
        )

    async def missing(self, hashes: Sequence[str]) -> set[str]:
        """Those of ``hashes`` the server does not hold, asked on one connection, in
        ``blob_check`` messages of up to :data:`MAX_CHECK_HASHES` hashes.

        Raises:
            TransferFailed: The question could not be asked or answered.
        """
        lacking: set[str] = set()
        async with self._session() as (conn, _):
            for start in range(0, len(hashes), MAX_CHECK_HASHES):
                batch = tuple(hashes[start : start + MAX_CHECK_HASHES])
                await conn.send(BlobCheck(hashes=batch))
                answer = await self._receive(conn)
                if not isinstance(answer, BlobCheckResult) or not set(answer.missing) <= set(batch):
                    raise ProtocolError("expected 'blob_check_result' about the blobs asked")
                lacking.update(answer.missing)
        return lacking


class WorkerConnection:
    """A transfer worker's blob connection, kept while it has transfers back to back.

    :meth:`ensure` opens it (or returns the one open); :meth:`close` closes it. The
    worker closes it when it goes idle, so no connection waits open for the server's
    idle timeout, and after a transfer that did not succeed, since the conversation's
    state is then unknown. The connection owns a nursery: both methods must be called
    from the worker's own task, outside any transfer's cancel scope.
    """

    def __init__(self, client: BlobClient) -> None:
        self._client = client
        self._stack: AsyncExitStack | None = None
        self._session: Session | None = None

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def ensure(self) -> Session:
        """The worker's connection, opened (with its hello) if it was not.

        Raises:
            TransferFailed: It could not be opened.
        """
        if self._session is not None:
            return self._session
        stack = AsyncExitStack()
        try:
            self._session = await stack.enter_async_context(self._client._session())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self._session

    async def close(self) -> None:
        """Closes the connection, if open. A failure to close it cleanly only ends it."""
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            with suppress(TransferFailed):
                await stack.aclose()


def _local_copy_matches(blobs: BlobStore, content_hash: str, size: int) -> bool:
    """Whether the stored blob still hashes to its name (run in a thread); a blob gone
    meanwhile is no corrupt one (the next attempt says it is gone).

    Raises:
        StoreError: It cannot be read.
    """
    hashed = hash_stored(blobs, content_hash, size)
    return hashed is None or hashed == (content_hash, size)
