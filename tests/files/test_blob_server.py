"""The server's blob connection under hostile input: nothing poisons the stored data."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket

import trio_sync
from trio_sync._errors import StoreFull
from trio_sync.files import (
    FileBlobStore,
    FileOptions,
    FileTransferError,
    MemoryBlobStore,
    RetryPolicy,
    TransferState,
)
from trio_sync.files._chunks import make_chunk as encode_chunk
from trio_sync.protocol import PROTOCOL_VERSION, Error, encode, encode_frame
from trio_sync.protocol._blob_messages import (
    BlobChunk,
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
from trio_sync.protocol._tokens import issue_token
from trio_sync.server import MemoryBlobBackend, serve_store
from trio_sync.store import ServerStore
from trio_sync.transport import connect_websocket, serve_websocket

from ..conftest import FAST, WAIT, ClientFactory, ServerFactory
from ..server._raw import raw_websocket, receive, refusal

SECRET = b"s" * 32


def _blobs(server: trio_sync.Server) -> Path:
    return Path(server.db_path + ".blobs/default/blobs")


async def _serve_on_loopback(
    nursery: trio.Nursery, store: ServerStore, backend: MemoryBlobBackend
) -> str:
    """A server on ``store`` with blobs in ``backend``, on loopback; its URL."""
    port = await nursery.start(
        partial(
            serve_store, store, partial(serve_websocket, host="127.0.0.1", port=0), blobs=backend
        )
    )
    return f"ws://127.0.0.1:{port}"


async def _hello(conn: object, token: str | None = None) -> object:
    await conn.send(BlobHello(PROTOCOL_VERSION, "A", token))  # type: ignore[attr-defined]
    return await conn.receive()  # type: ignore[attr-defined]


async def test_corrupt_wrong_truncated_and_oversized_uploads_are_refused(
    server: trio_sync.Server,
) -> None:
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            # A chunk whose bytes do not match its digest (damaged on the way).
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=0)
            good = encode_chunk(digest, 0, data[:1000])
            await conn.send(BlobChunk(digest, 0, good.data, hashlib.sha256(b"x").hexdigest()))
            refused = await conn.receive()
            assert isinstance(refused, BlobRefused) and "corrupt" in refused.reason
            # Truncated: the end before all the bytes.
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=0)
            await conn.send(encode_chunk(digest, 0, data[:1000]))
            await conn.send(UploadEnd(hash=digest))
            refused = await conn.receive()
            assert isinstance(refused, BlobRefused) and "truncated" in refused.reason
            # Resumes at the 1000 bytes held; other bytes than the hash says: discarded.
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=1000)
            for offset in range(1000, len(data), 100_000):
                await conn.send(
                    encode_chunk(digest, offset, os.urandom(min(100_000, len(data) - offset)))
                )
            await conn.send(UploadEnd(hash=digest))
            refused = await conn.receive()
            assert isinstance(refused, BlobRefused) and "do not match" in refused.reason
            assert not (_blobs(server) / digest).exists()
            # A huge declared size, and a chunk past the declared size.
            await conn.send(UploadBegin(hash=digest, size=1 << 45))
            refused = await conn.receive()
            assert isinstance(refused, BlobRefused) and not refused.retryable
            await conn.send(UploadBegin(hash=digest, size=10))
            assert isinstance(await conn.receive(), UploadOffset)
            await conn.send(encode_chunk(digest, 0, data[:11]))
            assert isinstance(await conn.receive(), BlobRefused)
            # The connection still works: a proper upload, then a download of it.
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=0)
            for offset in range(0, len(data), 100_000):
                await conn.send(encode_chunk(digest, offset, data[offset : offset + 100_000]))
            await conn.send(UploadEnd(hash=digest))
            assert await conn.receive() == UploadDone(hash=digest)
            await conn.send(DownloadBegin(hash=digest, offset=5))
            assert await conn.receive() == DownloadInfo(hash=digest, size=len(data))
    assert (_blobs(server) / digest).read_bytes() == data


async def test_blob_connections_need_a_token_for_their_store(open_server: ServerFactory) -> None:
    server = await open_server(auth_secrets=[SECRET], create_stores=True)
    expires = time.time() + 600
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as conn:
            reply = await _hello(conn)
            assert isinstance(reply, Error) and "not authorized" in reply.reason
        other = issue_token(SECRET, store_id="other", client_id="A", expires_at=expires)
        async with connect_websocket(server.url) as conn:
            reply = await _hello(conn, other)  # a token for another store
            assert isinstance(reply, Error) and "not authorized" in reply.reason
        mine = issue_token(SECRET, store_id="default", client_id="A", expires_at=expires)
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn, mine), BlobWelcome)


async def test_a_full_disk_on_the_server_is_retried_by_the_client(tmp_path: Path) -> None:
    full = [2]

    def fault(what: str) -> None:
        if full[0] and what == "append":
            full[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")

    backend = MemoryBlobBackend()
    backend.stores["default"] = MemoryBlobStore(fault=fault)
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    options = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05))
    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                url = await _serve_on_loopback(nursery, store, backend)
                db = str(tmp_path / "a.sqlite3")
                async with trio_sync.open_client(url, db, timings=FAST, files=options) as a:
                    fid = await a.files.save(b"some bytes", path="x")
                    await a.files.wait_idle()
                    state = a.files.state(fid).upload
                    assert state is not None and state.status == "done" and state.attempts == 2
                nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert (
        backend.stores["default"].read(hashlib.sha256(b"some bytes").hexdigest()) == b"some bytes"
    )


async def test_a_full_local_disk_refuses_the_save_and_records_nothing(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    def fault(what: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    options = FileOptions(blob_store=FileBlobStore(tmp_path / "blobs", fault=fault))
    db = str(tmp_path / "a.sqlite3")
    async with trio_sync.open_client(server.url, db, timings=FAST, files=options) as a:
        with pytest.raises(StoreFull):
            await a.files.save(b"x" * 1000, path="x")
        assert a.files.list() == [] and a.pending_events() == []
        assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


async def test_hostile_binary_frames_on_a_blob_connection(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with raw_websocket(server.url) as ws:
            await ws.send_message(encode(BlobHello(PROTOCOL_VERSION, "A", None)))
            welcome = await receive(ws)
            assert isinstance(welcome, BlobWelcome)

            async def refused(frame: bytes, words: str) -> None:
                await ws.send_message(frame)
                reply = await receive(ws)
                assert isinstance(reply, BlobRefused) and words in reply.reason, reply

            # A chunk with no upload begun (the binary frame without its control message).
            await refused(encode_frame(encode_chunk(digest, 0, data)), "no upload in progress")
            await ws.send_message(encode(UploadBegin(hash=digest, size=len(data))))
            assert await receive(ws) == UploadOffset(hash=digest, offset=0)
            # A chunk of another blob than the upload's.
            other = encode_chunk(hashlib.sha256(b"x").hexdigest(), 0, data)
            await refused(encode_frame(other), "no upload in progress")
            # Larger than the server's chunk_bytes (though under the frame limit).
            await ws.send_message(encode(UploadBegin(hash=digest, size=len(data))))
            assert await receive(ws) == UploadOffset(hash=digest, offset=0)
            big = encode_chunk(digest, 0, bytes(welcome.chunk_bytes + 1))
            await refused(encode_frame(big), f"1 to {welcome.chunk_bytes} bytes")
            # Empty, and at the wrong offset.
            await ws.send_message(encode(UploadBegin(hash=digest, size=len(data))))
            assert await receive(ws) == UploadOffset(hash=digest, offset=0)
            await refused(encode_frame(encode_chunk(digest, 0, b"")), "1 to")
            await ws.send_message(encode(UploadBegin(hash=digest, size=len(data))))
            assert await receive(ws) == UploadOffset(hash=digest, offset=0)
            await refused(encode_frame(encode_chunk(digest, 5, data[5:])), "expected 0")
            # Bytes that do not match the header's digest (the length differs from the
            # digested one: a frame cut short on the way).
            await ws.send_message(encode(UploadBegin(hash=digest, size=len(data))))
            assert await receive(ws) == UploadOffset(hash=digest, offset=0)
            frame = encode_frame(encode_chunk(digest, 0, data))
            await refused(frame[:-1], "corrupt chunk")
            # A frame shorter than the chunk header: malformed, the connection closes.
            await ws.send_message(frame[:40])
            reply = await refusal(ws)
            assert "shorter than its 73-byte header" in reply.reason
        async with raw_websocket(server.url) as ws:
            await ws.send_message(encode(BlobHello(PROTOCOL_VERSION, "A", None)))
            assert isinstance(await receive(ws), BlobWelcome)
            # A binary frame over the frame limit: refused as it arrives.
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message(b"\x01" + bytes(5 * 1024 * 1024))
                await ws.get_message()
    assert list(_blobs(server).iterdir()) == []
    partial = _blobs(server).parent / "partial" / digest
    assert not partial.exists() or partial.stat().st_size == 0
    # The server still serves files.
    async with open_test_client(server.url, "normal") as client:
        fid = await client.files.save(data, path="x")
        await client.files.wait_idle()
        assert client.files.state(fid).upload.status == "done"  # type: ignore[union-attr]
    assert (_blobs(server) / digest).read_bytes() == data


async def test_a_download_waits_for_the_upload_in_progress_instead_of_missing(
    server: trio_sync.Server,
) -> None:
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as up, connect_websocket(server.url) as down:
            assert isinstance(await _hello(up), BlobWelcome)
            assert isinstance(await _hello(down), BlobWelcome)
            # Nobody uploads it: missing at once, whatever the client would wait.
            await down.send(DownloadBegin(hash=digest, offset=0, wait=60))
            missing = await down.receive()
            assert isinstance(missing, BlobRefused) and missing.missing
            await up.send(UploadBegin(hash=digest, size=len(data)))
            assert await up.receive() == UploadOffset(hash=digest, offset=0)
            await up.send(encode_chunk(digest, 0, data[:100_000]))
            # Without a wait: missing at once, as before.
            await down.send(DownloadBegin(hash=digest, offset=0))
            missing = await down.receive()
            assert isinstance(missing, BlobRefused) and missing.missing
            # With one: the answer waits for the upload's end, then the blob comes.
            await down.send(DownloadBegin(hash=digest, offset=0, wait=60))
            await trio.testing.wait_all_tasks_blocked()
            for offset in range(100_000, len(data), 100_000):
                await up.send(encode_chunk(digest, offset, data[offset : offset + 100_000]))
            await up.send(UploadEnd(hash=digest))
            assert await up.receive() == UploadDone(hash=digest)
            assert await down.receive() == DownloadInfo(hash=digest, size=len(data))
            received = b""
            while len(received) < len(data):
                chunk = await down.receive()
                assert isinstance(chunk, BlobChunk)
                received += chunk.data
            assert received == data


async def test_a_download_waiting_for_an_upload_that_fails_is_told_missing(
    server: trio_sync.Server,
) -> None:
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as down:
            assert isinstance(await _hello(down), BlobWelcome)
            async with connect_websocket(server.url) as up:
                assert isinstance(await _hello(up), BlobWelcome)
                await up.send(UploadBegin(hash=digest, size=len(data)))
                assert await up.receive() == UploadOffset(hash=digest, offset=0)
                await down.send(DownloadBegin(hash=digest, offset=0, wait=60))
                await trio.testing.wait_all_tasks_blocked()
            # The uploader went away mid-upload: the waiting download hears at once.
            missing = await down.receive()
            assert isinstance(missing, BlobRefused) and missing.missing


async def test_a_fresh_upload_of_other_bytes_is_discarded(
    server: trio_sync.Server,
) -> None:
    data, other = os.urandom(300_000), os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            for bytes_ in (other, data):  # wrong bytes (each chunk true to its digest), then right
                await conn.send(UploadBegin(hash=digest, size=len(data)))
                assert await conn.receive() == UploadOffset(hash=digest, offset=0)
                for offset in range(0, len(data), 100_000):
                    await conn.send(encode_chunk(digest, offset, bytes_[offset : offset + 100_000]))
                await conn.send(UploadEnd(hash=digest))
                answer = await conn.receive()
                if bytes_ is other:
                    assert isinstance(answer, BlobRefused) and "do not match" in answer.reason
                    assert not (_blobs(server).parent / "partial" / digest).exists()
                else:
                    assert answer == UploadDone(hash=digest)
    assert (_blobs(server) / digest).read_bytes() == data


@pytest.mark.parametrize("store_kind", ["file", "memory"])
def test_finish_with_a_running_digest_publishes_or_discards(
    store_kind: str, tmp_path: Path
) -> None:
    store = FileBlobStore(tmp_path) if store_kind == "file" else MemoryBlobStore()
    data = b"hello blob"
    digest = hashlib.sha256(data).hexdigest()
    store.append_partial(digest, 0, data)
    assert not store.finish_partial(digest, digest=hashlib.sha256(b"other").hexdigest())
    assert store.partial_size(digest) == 0 and not store.has(digest)
    store.append_partial(digest, 0, data)
    assert store.finish_partial(digest, digest=digest)
    assert store.read(digest) == data


@pytest.mark.parametrize("store_kind", ["file", "memory"])
async def test_a_source_that_is_not_a_regular_file_is_refused_not_waited_on(
    store_kind: str, tmp_path: Path
) -> None:
    # Tried: a FIFO with no writer where put() expects a file (swapped in after save()
    # checked the path). Opening it blocked a bulk thread for ever.
    store = FileBlobStore(tmp_path / "blobs") if store_kind == "file" else MemoryBlobStore()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with trio.fail_after(WAIT):
        with pytest.raises(trio_sync.StoreError, match="not a regular file"):
            await trio.to_thread.run_sync(store.put, fifo, abandon_on_cancel=True)
    assert store.hashes() == []


async def test_a_blob_that_rotted_on_the_server_is_moved_aside_when_served_whole(
    tmp_path: Path,
) -> None:
    # Tried: the server's copy rots (same size, other bytes; each chunk it sends is true to
    # its digest). The client's running hash refuses it; it used to be refused by every
    # client, at every attempt, for ever, while the server went on serving it. Now the
    # server hashes what it serves whole and moves the blob aside: it reads as missing (a
    # download waits without spending its attempts) until its contents are uploaded again.
    backend = MemoryBlobBackend()
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    options = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=2))
    data = os.urandom(600_000)
    digest = hashlib.sha256(data).hexdigest()
    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                url = await _serve_on_loopback(nursery, store, backend)
                async with trio_sync.open_client(
                    url, str(tmp_path / "a.sqlite3"), timings=FAST, files=options
                ) as a:
                    fid = await a.files.save(data, path="x")
                    await a.files.wait_idle()
                    await a.wait_synced()
                    server_blobs = backend.stores["default"]
                    server_blobs._blobs[digest] = os.urandom(len(data))
                    async with trio_sync.open_client(
                        url, str(tmp_path / "b.sqlite3"), timings=FAST, files=options
                    ) as b:
                        await b.files.wait_for(
                            lambda files: (
                                (state := files.state(fid).download) is not None
                                and "does not hold that blob" in (state.last_error or "")
                            )
                        )
                        assert not server_blobs.has(digest)
                        [aside] = server_blobs.corrupt
                        assert aside.startswith(f"{digest}.")
                        state = b.files.state(fid).download
                        assert state is not None and state.status == "queued"
                        assert b.files.local_path(fid) is None
                        assert b.files.blobs.partial_size(digest) == 0  # discarded
                        # The same contents uploaded again (here: saved again) repair it.
                        await a.files.save(data, path="copy")
                        await b.files.wait_for(lambda files: files.has_contents(fid))
                        assert await b.files.read(fid) == data
                nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_chunks_sent_without_waiting_after_a_corrupt_one_are_refused_in_order(
    server: trio_sync.Server,
) -> None:
    data = os.urandom(400_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=0)
            # One good chunk, one damaged on the way, two more, the end: all at once (the
            # server writes a chunk while it receives the next).
            await conn.send(encode_chunk(digest, 0, data[:100_000]))
            bad = encode_chunk(digest, 100_000, data[100_000:200_000])
            await conn.send(BlobChunk(digest, 100_000, bad.data[::-1], bad.digest))
            await conn.send(encode_chunk(digest, 200_000, data[200_000:300_000]))
            await conn.send(encode_chunk(digest, 300_000, data[300_000:]))
            await conn.send(UploadEnd(hash=digest))
            reasons = []
            for _ in range(4):
                reply = await conn.receive()
                assert isinstance(reply, BlobRefused), reply
                reasons.append(reply.reason)
            assert "corrupt" in reasons[0]
            assert all("no upload in progress" in r for r in reasons[1:])
            # Only the good chunk was kept: the upload resumes right after it.
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=100_000)
            for offset in range(100_000, len(data), 100_000):
                await conn.send(encode_chunk(digest, offset, data[offset : offset + 100_000]))
            await conn.send(UploadEnd(hash=digest))
            assert await conn.receive() == UploadDone(hash=digest)
    assert (_blobs(server) / digest).read_bytes() == data


async def test_a_storage_failure_while_writing_a_chunk_ends_the_connection(
    tmp_path: Path,
) -> None:
    def fault(what: str) -> None:
        if what == "append":
            raise OSError(errno.EIO, "Input/output error")

    backend = MemoryBlobBackend()
    backend.stores["default"] = MemoryBlobStore(fault=fault)
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                url = await _serve_on_loopback(nursery, store, backend)
                async with connect_websocket(url) as conn:
                    assert isinstance(await _hello(conn), BlobWelcome)
                    await conn.send(UploadBegin(hash=digest, size=len(data)))
                    assert await conn.receive() == UploadOffset(hash=digest, offset=0)
                    await conn.send(encode_chunk(digest, 0, data))
                    await conn.send(UploadEnd(hash=digest))
                    reply = await conn.receive()
                    assert isinstance(reply, Error) and "server storage failed" in reply.reason
                nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_a_server_offering_more_bytes_than_the_file_has_is_refused_before_any_write(
    server: trio_sync.Server,
    open_test_client: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tried: a hostile (or broken) server answers a download with a size 1 GiB larger
    # than the file's facts say, then streams well-formed chunks without end. The client
    # wrote them all into its partial (a full disk, at the server's pace).
    from trio_sync.server import _blobs as server_blobs

    streamed = []

    async def endless(self: server_blobs.BlobSession, store: object, begin: DownloadBegin) -> None:
        await self._conn.send(DownloadInfo(hash=begin.hash, size=len(body) + 2**30))
        offset = begin.offset
        while True:
            await self._conn.send(encode_chunk(begin.hash, offset, b"x" * 65536))
            offset += 65536
            streamed.append(offset)

    body = os.urandom(100_000)
    options = FileOptions(retry=RetryPolicy(base=0.01, cap=0.01, max_attempts=2))
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await a.files.save(body, path="x")
            await a.files.wait_idle()
            await a.wait_synced()
        monkeypatch.setattr(server_blobs.BlobSession, "_download", endless)
        async with open_test_client(server.url, "B", files=options) as b:
            await b.wait_synced()
            await b.files.wait_idle()
            state = b.files.state(fid).download
            # Its copy said sound (asked apart): no other attempt can do better.
            assert state is not None and state.status == "error" and state.attempts == 1
            assert state.last_error == (
                f"the server offers {len(body) + 2**30} bytes for a blob of {len(body)}, and "
                "says its copy is sound: the file's event names a wrong size for these "
                "contents (or the server is faulty); not tried again"
            )
            assert not (tmp_path / "B.sqlite3.blobs" / "partial").exists() or not list(
                (tmp_path / "B.sqlite3.blobs" / "partial").iterdir()
            )
            # The status says so (a hostile review found nothing there: a download given
            # up for a full disk left B "synced", with no hint that a file is missing).
            assert b.status.downloads_failed == 1 and b.status.downloads_pending == 0
            with pytest.raises(FileTransferError):
                await b.files.read(fid)


async def test_a_whole_partial_left_without_its_end_is_published_when_asked_again(
    server: trio_sync.Server,
) -> None:
    # Tried: every chunk sent, then the connection dropped before upload_end (a network
    # drop, a cancelled transfer). The next attempt was answered offset == size, which
    # the client takes for "stored already": it marked the upload done, and the blob
    # was never published (no other client could read the file, even after restarts).
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    partial = Path(server.db_path + ".blobs/default/partial") / digest
    wrong = os.urandom(300_000)
    with trio.fail_after(WAIT):
        for body in (wrong, data):  # bytes that do not match first: sent again from 0
            async with connect_websocket(server.url) as conn:
                assert isinstance(await _hello(conn), BlobWelcome)
                await conn.send(UploadBegin(hash=digest, size=len(body)))
                assert await conn.receive() == UploadOffset(hash=digest, offset=0)
                for offset in range(0, len(body), 100_000):
                    await conn.send(encode_chunk(digest, offset, body[offset : offset + 100_000]))
                while not partial.exists() or partial.stat().st_size < len(body):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the server wrote every chunk (a condition)
            async with connect_websocket(server.url) as conn:
                assert isinstance(await _hello(conn), BlobWelcome)
                await conn.send(UploadBegin(hash=digest, size=len(body)))
                answer = await conn.receive()
                if body is wrong:
                    assert answer == UploadOffset(hash=digest, offset=0)
                    assert not (_blobs(server) / digest).exists()
                else:
                    assert answer == UploadOffset(hash=digest, offset=len(data))
    assert (_blobs(server) / digest).read_bytes() == data
    assert not partial.exists()


@contextlib.asynccontextmanager
async def _c1_uploading(
    server: trio_sync.Server, data: bytes, sent: int
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, trio_websocket.WebSocketConnection]]:
    """Two blob connections: c1 has begun uploading ``data`` and the server holds its
    first ``sent`` bytes; c2 has only said hello."""
    digest = hashlib.sha256(data).hexdigest()
    partial = Path(server.db_path + ".blobs/default/partial") / digest
    async with connect_websocket(server.url) as c1, connect_websocket(server.url) as c2:
        for conn in (c1, c2):
            assert isinstance(await _hello(conn), BlobWelcome)
        await c1.send(UploadBegin(hash=digest, size=len(data)))
        assert await c1.receive() == UploadOffset(hash=digest, offset=0)
        for offset in range(0, sent, 100_000):
            await c1.send(encode_chunk(digest, offset, data[offset : min(offset + 100_000, sent)]))
        while not partial.exists() or partial.stat().st_size < sent:  # noqa: ASYNC110
            await trio.sleep(0.01)  # the server wrote every chunk (a condition)
        yield c1, c2  # type: ignore[misc]


async def test_bytes_another_client_left_for_a_hash_cost_an_honest_upload_no_attempt(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a hostile review): a client that knows a hash leaves a partial upload of
    # other bytes under it. The honest uploader resumed onto it, was refused at the end
    # ("do not match the hash"), and that counted against its max_attempts: done again
    # and again, it made the upload give up.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    partial = Path(server.db_path + ".blobs/default/partial") / digest
    once = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=1))
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as hostile:
            assert isinstance(await _hello(hostile), BlobWelcome)
            await hostile.send(UploadBegin(hash=digest, size=len(data)))
            assert await hostile.receive() == UploadOffset(hash=digest, offset=0)
            await hostile.send(encode_chunk(digest, 0, os.urandom(100_000)))
            while not partial.exists() or partial.stat().st_size < 100_000:  # noqa: ASYNC110
                await trio.sleep(0.01)  # the server wrote the bytes (a condition)
        async with open_test_client(server.url, "A", files=once) as a:
            fid = await a.files.save(data, path="f")
            await a.files.wait_idle()
            assert a.files.state(fid).upload == TransferState("done", digest)
            errors = [n for n in a.recent_events() if n.kind == "upload.error"]
            assert [n["attempts"] for n in errors] == [0]
            assert "not counted" in str(errors[0]["error"])
    assert (_blobs(server) / digest).read_bytes() == data


async def test_a_server_that_refuses_every_upload_as_not_matching_is_given_up_on(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried (a hostile review): a server whose storage mangles every upload says "the
    # uploaded bytes do not match the hash" each time. The client's copy is sound, so no
    # refusal counted: it uploaded for ever, "syncing". Twice in a row, one counts.
    def mangles(store: FileBlobStore, content_hash: str, *, digest: str | None = None) -> bool:
        store.discard_partial(content_hash)
        return False

    monkeypatch.setattr(FileBlobStore, "finish_partial", mangles)
    twice = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=2))
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=twice) as a:
            fid = await a.files.save(os.urandom(50_000), path="f")
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "do not match the hash" in (stuck.last_error or "")
            state = a.files.state(fid).upload
            assert state is not None and (state.status, state.attempts) == ("error", 2)
            errors = [n for n in a.recent_events() if n.kind == "upload.error"]
            assert [n["attempts"] for n in errors] == [0, 1, 1, 2]


async def test_an_end_after_another_session_published_the_same_bytes_is_done(
    server: trio_sync.Server,
) -> None:
    # Tried: c1 sends every chunk; c2 asks for the same blob, and the whole partial is
    # published for it; then c1 sends its upload_end. c1 was told its bytes "do not
    # match" (the server logged a client sending bad bytes), and retried for nothing.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with _c1_uploading(server, data, len(data)) as (c1, c2):
            await c2.send(UploadBegin(hash=digest, size=len(data)))
            assert await c2.receive() == UploadOffset(hash=digest, offset=len(data))
            await c1.send(UploadEnd(hash=digest))
            assert await c1.receive() == UploadDone(hash=digest)
    assert (_blobs(server) / digest).read_bytes() == data


async def test_a_smaller_size_never_discards_the_partial_of_an_upload_in_progress(
    server: trio_sync.Server,
) -> None:
    # Tried: while c1 uploads a blob, c2 begins the same hash with a smaller size. The
    # partial was discarded as too long, under c1's upload ("moved on" refusals): anyone
    # knowing a hash could wreck another client's upload again and again.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with _c1_uploading(server, data, 100_000) as (c1, c2):
            await c2.send(UploadBegin(hash=digest, size=10))
            refused = await c2.receive()
            assert isinstance(refused, BlobRefused) and not refused.retryable
            assert "300000 bytes" in refused.reason
            for offset in range(100_000, len(data), 100_000):
                await c1.send(encode_chunk(digest, offset, data[offset : offset + 100_000]))
            await c1.send(UploadEnd(hash=digest))
            assert await c1.receive() == UploadDone(hash=digest)
    assert (_blobs(server) / digest).read_bytes() == data
