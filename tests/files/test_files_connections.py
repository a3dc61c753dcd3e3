"""A transfer worker's blob connection: kept while transfers come back to back, closed
when the worker goes idle and after a transfer that did not succeed."""

from __future__ import annotations

import hashlib
import os

import trio

import trio_sync
from trio_sync.files import FileOptions
from trio_sync.files._wire import Session, WorkerConnection
from trio_sync.server import BlobLimits

from ..conftest import WAIT, ClientFactory, ServerFactory


def _blob_connections(server: trio_sync.Server) -> tuple[float, float]:
    """(blob connections welcomed so far, blob connections open now), from the metrics."""
    registry = server._control.hub.metrics.registry
    opened = registry.get_sample_value("trio_sync_blob_connections_opened_total") or 0.0
    open_now = registry.get_sample_value("trio_sync_blob_connections") or 0.0
    return opened, open_now


async def _until_closed(server: trio_sync.Server) -> None:
    # The server sees a close a moment after the client sent it: a condition to wait on.
    while _blob_connections(server)[1] > 0:  # noqa: ASYNC110 (a gauge has no event)
        await trio.sleep(0.01)


async def test_downloads_back_to_back_share_one_connection_closed_once_idle(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    options = FileOptions(uploads=1, downloads=1)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            ids = [await a.files.save(os.urandom(1000 + n), path=f"f{n}") for n in range(6)]
            await a.files.wait_idle()
            await a.wait_synced()
            await _until_closed(server)
            opened_before, _ = _blob_connections(server)
            # B joins late: six downloads queued at once, for blobs the server holds.
            async with open_test_client(server.url, "B", files=options) as b:
                await b.wait_synced()
                await b.files.wait_for(lambda files: all(files.has_contents(f) for f in ids))
                await b.files.wait_idle()
                for fid in ids:
                    assert await b.files.read(fid) == await a.files.read(fid)
                await _until_closed(server)
                opened, open_now = _blob_connections(server)
                assert (opened - opened_before, open_now) == (1, 0)


async def test_six_uploads_on_one_worker_open_one_connection(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    options = FileOptions(uploads=1, downloads=1)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            opened_before, _ = _blob_connections(server)
            a.files.executor.pause()
            for n in range(6):
                await a.files.save(os.urandom(1000 + n), path=f"f{n}")
            a.files.executor.resume()
            await a.files.wait_idle()
            await _until_closed(server)
            opened, open_now = _blob_connections(server)
            assert (opened - opened_before, open_now) == (1, 0)


async def test_after_a_failed_transfer_the_next_one_opens_a_new_connection(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # What was tried: the first upload is refused for good (over the server's size
    # limit); the worker must not carry that conversation on into the next upload.
    server = await open_server(blob_limits=BlobLimits(max_blob_bytes=4096))
    options = FileOptions(uploads=1, downloads=1)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            opened_before, _ = _blob_connections(server)
            a.files.executor.pause()
            too_big = await a.files.save(os.urandom(5000), path="too-big")
            small = await a.files.save(b"fits", path="small")
            a.files.executor.resume()
            await a.files.wait_for(
                lambda files: (
                    files.state(too_big).upload.status == "error"  # type: ignore[union-attr]
                    and files.state(small).upload.status == "done"  # type: ignore[union-attr]
                )
            )
            await _until_closed(server)
            opened, _ = _blob_connections(server)
            assert opened - opened_before == 2


async def test_a_delete_while_the_worker_connects_cancels_the_upload(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: the file is deleted while its worker is still opening its
    # connection, before the transfer's cancel scope is entered. Another file with the
    # same contents, queued behind it, keeps the local blob: only the cancellation can
    # stop the upload.
    connecting, release = trio.Event(), trio.Event()
    real_ensure = WorkerConnection.ensure

    async def slow_ensure(self: WorkerConnection) -> Session:
        connecting.set()
        await release.wait()
        return await real_ensure(self)

    monkeypatch.setattr(WorkerConnection, "ensure", slow_ensure)  # type: ignore[attr-defined]
    data = os.urandom(64 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            await a.wait_synced()
            doomed = await a.files.save(data, path="doomed")
            await connecting.wait()
            a.files.executor.pause()
            kept = await a.files.save(data, path="kept")
            await a.files.delete(doomed)
            release.set()
            while a.files.executor.moving("upload", digest):
                await a.files.executor.changed.event.wait()
            blobs = server.db_path + ".blobs/default"
            assert [name for _, _, names in os.walk(blobs) for name in names] == []
            kinds = [n.kind for n in a.recent_events() if n.fields.get("file_id") == doomed]
            assert "upload.complete" not in kinds
            a.files.executor.resume()
            await a.files.wait_idle()
            assert a.files.state(doomed).upload is None
            assert a.files.state(kept).upload.status == "done"  # type: ignore[union-attr]
