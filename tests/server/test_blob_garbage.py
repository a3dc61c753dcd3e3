"""The server deletes blobs no live file refers to when an upload needs their room."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import trio

import trio_sync
from trio_sync.files import FileBlobStore, FileOptions, MemoryBlobStore, RetryPolicy
from trio_sync.files._chunks import make_chunk
from trio_sync.protocol._blob_messages import (
    BlobRefused,
    BlobWelcome,
    UploadBegin,
    UploadOffset,
)
from trio_sync.server import BlobLimits, MemoryBlobBackend
from trio_sync.server._blob_upkeep import RecentlyAsked, upkeep
from trio_sync.store import ServerStore
from trio_sync.transport import connect_websocket

from ..conftest import WAIT, ClientFactory, ServerFactory
from ..files.test_blob_server import _hello, _serve_on_loopback
from ..files.test_blob_upkeep import _upload


def _stored(server: trio_sync.Server) -> set[str]:
    return set(os.listdir(server.db_path + ".blobs/default/blobs"))


def _hash(client: trio_sync.Client, file_id: str) -> str:
    info = client.files.get(file_id)
    assert info is not None
    return info.content_hash


async def test_deleted_and_replaced_contents_make_room_for_a_new_upload(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # Tried: a 10,000-byte quota, a live file of 4,000 bytes, one of 3,000 replaced and
    # one of 2,000 deleted; then 4,000 new bytes. The server kept every blob it ever
    # received, so the store stayed over its quota and the upload was refused for good.
    limits = BlobLimits(max_store_bytes=10_000, unreferenced_min_age=0)
    server = await open_server(blob_limits=limits)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            live = await a.files.save(os.urandom(4000), path="live")
            replaced = await a.files.save(os.urandom(3000), path="replaced")
            deleted = await a.files.save(os.urandom(2000), path="deleted")
            await a.files.wait_idle()
            old = {_hash(a, replaced), _hash(a, deleted)}
            await a.files.update(replaced, os.urandom(1000))
            await a.files.delete(deleted)
            await a.files.wait_idle()
            await a.wait_synced()
            assert old < _stored(server)
            new = await a.files.save(os.urandom(4000), path="new")
            await a.files.wait_idle()
            assert a.files.state(new).upload.status == "done"  # type: ignore[union-attr]
            assert a.status.state == "synced"
            assert _stored(server) == {_hash(a, f) for f in (live, replaced, new)}
        async with open_test_client(server.url, "B") as b:
            await b.wait_synced()
            assert len(await b.files.read(live)) == 4000


async def test_garbage_younger_than_the_minimum_age_is_kept_and_the_upload_waits_for_it(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # The contents of a file whose event is still on its way look like garbage: the
    # minimum age protects them. Until they are that old the upload is refused, but as
    # worth retrying (it was refused for good, and the client stayed "stuck" until it
    # was opened again, though the room came free meanwhile).
    limits = BlobLimits(max_store_bytes=10_000, unreferenced_min_age=1.0)
    server = await open_server(blob_limits=limits)
    # One attempt only: a refusal that counted would give the upload up at once.
    options = FileOptions(retry=RetryPolicy(base=0.1, cap=0.2, max_attempts=1))
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            gone = await a.files.save(os.urandom(6000), path="gone")
            await a.files.wait_idle()
            kept = _hash(a, gone)
            await a.files.delete(gone)
            await a.wait_synced()
            new = await a.files.save(os.urandom(6000), path="new")
            # Refused for room to come: the reason is noted, no attempt counted.
            await a.files.wait_for(
                lambda files: files.state(new).upload.last_error is not None  # type: ignore[union-attr]
            )
            state = a.files.state(new).upload
            assert state is not None and state.attempts == 0
            error = state.last_error or ""
            assert "quota" in error and "trying again" in error
            assert kept in _stored(server)
            await a.files.wait_idle()
            assert a.files.state(new).upload.status == "done"  # type: ignore[union-attr]
            assert _stored(server) == {_hash(a, new)}
            assert (await a.wait_synced()).state == "synced"


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_delete_unreferenced_spares_what_is_kept_and_what_is_young(
    kind: str, tmp_path: Path
) -> None:
    now = [time.time()]
    store: FileBlobStore | MemoryBlobStore
    if kind == "file":
        store = FileBlobStore(tmp_path / "blobs", clock=lambda: now[0])
    else:
        store = MemoryBlobStore(clock=lambda: now[0])
    kept, old = store.put(b"kept")[0], store.put(b"garbage")[0]
    if kind == "file":  # stored an hour ago, as the files' times say
        for name in (kept, old):
            os.utime(tmp_path / "blobs" / "blobs" / name, (now[0] - 3600, now[0] - 3600))
    else:
        now[0] += 3600
    young = store.put(b"young")[0]
    assert store.delete_unreferenced({kept}, 600) == [(old, len(b"garbage"))]
    assert store.has(kept) and store.has(young) and not store.has(old)
    assert hashlib.sha256(store.read(kept)).hexdigest() == kept


async def test_recently_asked_forgets_after_the_age(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked = RecentlyAsked()
    asked.note("a")
    await trio.sleep(30)
    asked.note("b")
    assert asked.since(60) == {"a", "b"}
    await trio.sleep(45)
    assert asked.since(60) == {"b"}
    await trio.sleep(16)
    assert asked.since(60) == set()


async def test_a_blob_answered_stored_already_outlives_a_restart_and_a_collection(
    open_server: ServerFactory, tmp_path: Path
) -> None:
    # Tried: a blob no file refers to, stored long ago; a client begins its upload and
    # is told "stored already" (it sends nothing; its event comes later). Another node,
    # or this one restarted, knows nothing of that answer: its next collection deleted
    # the blob, and the file's event then named contents nobody held.
    limits = BlobLimits(max_store_bytes=10_000, unreferenced_min_age=600)
    data = os.urandom(6000)
    digest = hashlib.sha256(data).hexdigest()
    first = await open_server(blob_limits=limits)
    blob = Path(first.db_path + ".blobs/default/blobs") / digest
    with trio.fail_after(WAIT):
        async with connect_websocket(first.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            await _upload(conn, data)
        long_ago = time.time() - 7200
        os.utime(blob, (long_ago, long_ago))
        async with connect_websocket(first.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=len(data))
        await first.shutdown()
        second = await open_server(blob_limits=limits)  # the same files, no memory of it
        async with connect_websocket(second.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            other = os.urandom(6000)
            await conn.send(UploadBegin(hash=hashlib.sha256(other).hexdigest(), size=6000))
            refused = await conn.receive()
            assert isinstance(refused, BlobRefused) and "quota" in refused.reason
    assert blob.read_bytes() == data


async def test_a_delete_right_after_a_refusal_is_seen_by_the_next_upload(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # Tried: an upload refused over the quota (nothing to collect), then a file deleted
    # and the refused one saved again within seconds. The collection's answer was
    # reused for 5 s however the log had changed: refused for good again.
    limits = BlobLimits(max_store_bytes=10_000, unreferenced_min_age=0)
    server = await open_server(blob_limits=limits)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            first = await a.files.save(os.urandom(6000), path="first")
            await a.files.wait_idle()
            body = os.urandom(6000)
            second = await a.files.save(body, path="second")
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "quota" in (stuck.last_error or "")
            await a.files.delete(first)
            await a.wait_status(lambda s: s.pending == 0)  # the delete is on the server
            await a.files.update(second, body)  # "save it again" (docs/files.md)
            await a.files.wait_idle()
            assert a.files.state(second).upload.status == "done"  # type: ignore[union-attr]
            assert _stored(server) == {_hash(a, second)}


async def test_a_touch_restarts_the_age_but_not_the_last_check(tmp_path: Path) -> None:
    # Tried: (a) a "stored already" answer marked the blob as checked now without hashing
    # it, so a corrupt-download report soon after was dismissed and a rotten blob kept
    # being served; (b) a whole partial published when its upload was asked again kept
    # the partial's old write time, and the next collection elsewhere deleted it.
    backend = MemoryBlobBackend()
    log = ServerStore.open(str(tmp_path / "server.sqlite3"))
    data = os.urandom(6000)
    digest = hashlib.sha256(data).hexdigest()
    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                url = await _serve_on_loopback(nursery, log, backend)
                blobs = backend.store("default")
                now = [1000.0]
                blobs.clock = lambda: now[0]  # type: ignore[attr-defined]
                async with connect_websocket(url) as conn:
                    assert isinstance(await _hello(conn), BlobWelcome)
                    await conn.send(UploadBegin(hash=digest, size=len(data)))
                    assert await conn.receive() == UploadOffset(hash=digest, offset=0)
                    await conn.send(make_chunk(digest, 0, data))
                    while blobs.partial_size(digest) < len(data):  # noqa: ASYNC110
                        await trio.sleep(0.01)  # the server wrote the chunk (a condition)
                now[0] += 7200  # the partial is two hours old when its upload is asked again
                care = upkeep(blobs)
                async with connect_websocket(url) as conn:
                    assert isinstance(await _hello(conn), BlobWelcome)
                    await conn.send(UploadBegin(hash=digest, size=len(data)))
                    assert await conn.receive() == UploadOffset(hash=digest, offset=len(data))
                    assert blobs.delete_unreferenced(set(), 600) == []  # (b) young again
                    fingerprint = blobs.fingerprint(digest)
                    assert fingerprint is not None
                    checked = care.verified_at(digest, fingerprint)
                    assert checked is not None
                    await conn.send(UploadBegin(hash=digest, size=len(data)))
                    assert await conn.receive() == UploadOffset(hash=digest, offset=len(data))
                    after = blobs.fingerprint(digest)
                    assert after is not None and care.verified_at(digest, after) == checked  # (a)
                nursery.cancel_scope.cancel()
    finally:
        log.close()


async def test_a_partial_published_late_is_as_young_as_its_publish(
    server: trio_sync.Server,
) -> None:
    # Tried: every chunk sent two hours ago, the connection dropped before upload_end;
    # the upload asked again now is answered "stored" (the partial is published then).
    # The blob kept the partial's write time: two hours old at once, garbage to the next
    # collection on another node (or after a restart) before its event came.
    data = os.urandom(6000)
    digest = hashlib.sha256(data).hexdigest()
    partial = Path(server.db_path + ".blobs/default/partial") / digest
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=0)
            await conn.send(make_chunk(digest, 0, data))
            while not partial.exists() or partial.stat().st_size < len(data):  # noqa: ASYNC110
                await trio.sleep(0.01)  # the server wrote the chunk (a condition)
        long_ago = time.time() - 7200
        os.utime(partial, (long_ago, long_ago))
        async with connect_websocket(server.url) as conn:
            assert isinstance(await _hello(conn), BlobWelcome)
            await conn.send(UploadBegin(hash=digest, size=len(data)))
            assert await conn.receive() == UploadOffset(hash=digest, offset=len(data))
    blob = Path(server.db_path + ".blobs/default/blobs") / digest
    assert time.time() - blob.stat().st_mtime < 600
