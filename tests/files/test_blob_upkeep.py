"""The server's blob stores stay bounded and sound: the quota, the expiry of abandoned
upload partials, and the quarantine and repair of a corrupt blob."""

from __future__ import annotations

import hashlib
import os

import trio

import trio_sync
from trio_sync.cli import parser
from trio_sync.cli._serve import blob_limits
from trio_sync.files._chunks import make_chunk
from trio_sync.protocol._blob_messages import (
    BlobRefused,
    BlobWelcome,
    UploadBegin,
    UploadDone,
    UploadEnd,
    UploadOffset,
)
from trio_sync.server import BlobLimits
from trio_sync.transport import connect_websocket

from ..conftest import WAIT, ClientFactory, ServerFactory
from .test_blob_server import _hello


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_an_upload_over_the_store_quota_is_refused_and_the_client_shows_it(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # Tried: a store with a 10,000-byte quota holds a 6,000-byte file; a second one of
    # 6,000 bytes used to be stored anyway (there was no quota at all).
    server = await open_server(blob_limits=BlobLimits(max_store_bytes=10_000))
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            first = await a.files.save(os.urandom(6000), path="first")
            await a.files.wait_idle()
            assert a.files.state(first).upload.status == "done"  # type: ignore[union-attr]
            second = await a.files.save(os.urandom(6000), path="second")
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "quota" in (stuck.last_error or "")
            assert "max_store_bytes=10000" in (stuck.last_error or "")
            state = a.files.state(second).upload
            assert state is not None and state.status == "error" and state.attempts == 1
            # The same contents as the stored file need no room: they are stored already.
            again = await a.files.save(a.files.blobs.read(_first_hash(a, first)), path="again")
            await a.files.wait_for(
                lambda files: files.state(again).upload.status == "done"  # type: ignore[union-attr]
            )


def _first_hash(client: trio_sync.Client, file_id: str) -> str:
    info = client.files.get(file_id)
    assert info is not None
    return info.content_hash


async def test_uploads_in_progress_count_at_their_declared_size(
    open_server: ServerFactory,
) -> None:
    # Tried: two uploads of 6,000 bytes begun together under a 10,000-byte quota, the first
    # with only 1,000 bytes sent. Counting the bytes on disk alone, both would fit.
    server = await open_server(blob_limits=BlobLimits(max_store_bytes=10_000))
    one, two = os.urandom(6000), os.urandom(6000)
    with trio.fail_after(WAIT):
        async with connect_websocket(server.url) as a, connect_websocket(server.url) as b:
            assert isinstance(await _hello(a), BlobWelcome)
            assert isinstance(await _hello(b), BlobWelcome)
            await a.send(UploadBegin(hash=_digest(one), size=len(one)))
            assert await a.receive() == UploadOffset(hash=_digest(one), offset=0)
            await a.send(make_chunk(_digest(one), 0, one[:1000]))
            await b.send(UploadBegin(hash=_digest(two), size=len(two)))
            refused = await b.receive()
            assert isinstance(refused, BlobRefused) and not refused.retryable
            assert "quota" in refused.reason and "max_store_bytes=10000" in refused.reason
            await a.send(make_chunk(_digest(one), 1000, one[1000:]))
            await a.send(UploadEnd(hash=_digest(one)))
            assert await a.receive() == UploadDone(hash=_digest(one))
            # A blob the store holds already is answered as before, whatever the quota.
            await b.send(UploadBegin(hash=_digest(one), size=len(one)))
            assert await b.receive() == UploadOffset(hash=_digest(one), offset=len(one))
            # An upload given up (another begins on its connection) frees its room.
            small = os.urandom(3000)
            await a.send(UploadBegin(hash=_digest(small), size=len(small)))
            assert await a.receive() == UploadOffset(hash=_digest(small), offset=0)
            await a.send(UploadBegin(hash=_digest(small), size=len(small)))
            assert await a.receive() == UploadOffset(hash=_digest(small), offset=0)


def test_serve_takes_a_store_quota_with_units() -> None:
    args = parser().parse_args(["serve", "--db", "x.sqlite3", "--max-store-bytes", "2G"])
    assert blob_limits(args).max_store_bytes == 2 * 2**30
    args = parser().parse_args(["serve", "--db", "x.sqlite3", "--max-store-bytes", "512MiB"])
    assert blob_limits(args).max_store_bytes == 512 * 2**20
    args = parser().parse_args(["serve", "--db", "x.sqlite3"])
    assert blob_limits(args) == BlobLimits()
