"""A transfer worker's blob connection: kept while transfers come back to back, closed
when the worker goes idle and after a transfer that did not succeed."""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_sync
from trio_sync import ConnectionClosed
from trio_sync.files import FileOptions
from trio_sync.files._wire import BlobClient, Session, TransferFailed, WorkerConnection
from trio_sync.server import BlobLimits, MemoryBlobBackend
from trio_sync.server._blobs import BlobSession

from .._virtual import World
from ..conftest import WAIT, ClientFactory, ServerFactory

#: One worker per direction, so that transfers go back to back on one connection; and
#: no linger, so that "closed once idle" is seen at once.
ONE_WORKER_EACH = FileOptions(uploads=1, downloads=1, keep_connection=0.0)


def _blob_connections(server: trio_sync.Server) -> tuple[float, float]:
    """(blob connections welcomed so far, blob connections open now), from the metrics."""
    registry = server._control.hub.metrics.registry
    opened = registry.get_sample_value("trio_sync_blob_connections_opened_total") or 0.0
    open_now = registry.get_sample_value("trio_sync_blob_connections") or 0.0
    return opened, open_now


def _server_closes_after_each_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server closes each blob connection right after an upload's upload_done (as
    an idle timeout, a proxy or a restart would, between two transfers)."""
    real_end = BlobSession._end_upload

    async def end_then_close(self: BlobSession, *args: object) -> None:
        await real_end(self, *args)  # type: ignore[arg-type]
        raise ConnectionClosed("test: the server closes after each upload")

    monkeypatch.setattr(BlobSession, "_end_upload", end_then_close)


async def _until_closed(server: trio_sync.Server) -> None:
    # The server sees a close a moment after the client sent it: a condition to wait on.
    while _blob_connections(server)[1] > 0:  # noqa: ASYNC110 (a gauge has no event)
        await trio.sleep(0.01)


async def test_downloads_back_to_back_share_one_connection_closed_once_idle(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=ONE_WORKER_EACH) as a:
            await a.wait_synced()
            ids = [await a.files.save(os.urandom(1000 + n), path=f"f{n}") for n in range(6)]
            await a.files.wait_idle()
            await a.wait_synced()
            await _until_closed(server)
            opened_before, _ = _blob_connections(server)
            # B joins late: six downloads queued at once, for blobs the server holds.
            async with open_test_client(server.url, "B", files=ONE_WORKER_EACH) as b:
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
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=ONE_WORKER_EACH) as a:
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
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=ONE_WORKER_EACH) as a:
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


async def test_a_kept_connection_the_server_closed_costs_no_failed_attempt(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: the server closes each blob connection right after an upload's
    # upload_done (as an idle timeout, a proxy or a restart would, between two
    # transfers). The worker finds its kept connection closed as the next upload starts.
    _server_closes_after_each_upload(monkeypatch)  # type: ignore[arg-type]
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=ONE_WORKER_EACH) as a:
            await a.wait_synced()
            opened_before, _ = _blob_connections(server)
            a.files.executor.pause()
            ids = [await a.files.save(os.urandom(1000 + n), path=f"f{n}") for n in range(4)]
            a.files.executor.resume()
            await a.files.wait_idle()
            states = [a.files.state(fid).upload for fid in ids]
            assert [(s.status, s.attempts) for s in states if s] == [("done", 0)] * 4
            assert not [n for n in a.recent_events() if n.kind == "upload.error"]
            opened, _ = _blob_connections(server)
            assert opened - opened_before == 4  # each upload found the last one closed


async def test_a_refusal_in_answer_to_a_begin_keeps_the_connection(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: B's one download worker first asks for a blob the server does not
    # hold yet (its uploader A is paused: "missing"), then for one it holds (uploaded by
    # C). The refusal ended that conversation cleanly: both go on one connection.
    opened_by: list[str] = []
    real_session = BlobClient._session

    def counting_session(self: BlobClient) -> AbstractAsyncContextManager[Session]:
        opened_by.append(self._client_id)
        return real_session(self)

    monkeypatch.setattr(BlobClient, "_session", counting_session)  # type: ignore[attr-defined]
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A", files=ONE_WORKER_EACH) as a,
            open_test_client(server.url, "B", files=ONE_WORKER_EACH) as b,
            open_test_client(server.url, "C", files=ONE_WORKER_EACH) as c,
        ):
            for client in (a, b, c):
                await client.wait_synced()
            a.files.executor.pause()
            b.files.executor.pause()
            later = await a.files.save(os.urandom(3000), path="later")
            await b.files.wait_for(lambda files: files.get(later) is not None)
            held = await c.files.save(os.urandom(2000), path="held")  # queued after
            await c.files.wait_for(
                lambda files: files.state(held).upload.status == "done"  # type: ignore[union-attr]
            )
            await b.files.wait_for(lambda files: files.get(held) is not None)
            notes = b.subscribe()
            b.files.executor.resume()
            async for note in notes:
                if note.kind == "download.error" and note.fields["file_id"] == later:
                    break
            await b.files.wait_for(lambda files: files.has_contents(held))
            assert opened_by.count("B") == 1
            a.files.executor.resume()
            await b.files.wait_for(lambda files: files.has_contents(later))
            assert await b.files.read(later) == await a.files.read(later)


async def test_an_idle_worker_keeps_its_connection_for_keep_connection_seconds(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Files saved a moment apart (a person saving one, then another) reuse the
    # connection; it closes keep_connection seconds after the last transfer ended.
    await world.start_server(blobs=MemoryBlobBackend())
    options = FileOptions(uploads=1, downloads=1, keep_connection=2.0)
    async with world.client("A", files=options) as a:
        await a.wait_synced()
        for n in range(3):
            await a.files.save(os.urandom(1000 + n), path=f"f{n}")
            await a.files.wait_idle()
            await trio.sleep(1.5)  # under keep_connection: the next save reuses it
        done = world.times("A", "upload.complete")
        assert len(done) == 3
        assert len(world.times("A", "upload.connection_opened")) == 1
        assert world.times("A", "upload.connection_closed") == []
        await trio.sleep(1.0)
        [closed] = world.times("A", "upload.connection_closed")
        assert closed == pytest.approx(done[-1] + 2.0)
        # After that, the next upload opens a new one.
        await a.files.save(b"later", path="later")
        await a.files.wait_idle()
        assert len(world.times("A", "upload.connection_opened")) == 2


async def test_a_delete_while_a_download_checks_the_local_store_cancels_it(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: B deletes the file while its download worker asks its own store
    # whether it holds the contents, before any attempt's scope exists.
    asking, release = trio.Event(), trio.Event()
    real_holds = BlobClient.holds
    armed = [True]

    async def slow_holds(self: BlobClient, content_hash: str) -> bool:
        if armed[0] and self._client_id == "B":
            armed[0] = False
            asking.set()
            await release.wait()
        return await real_holds(self, content_hash)

    monkeypatch.setattr(BlobClient, "holds", slow_holds)  # type: ignore[attr-defined]
    payload = os.urandom(200_000)
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            fid = await a.files.save(payload, path="x")
            await a.files.wait_idle()
            await asking.wait()
            await b.files.delete(fid)
            release.set()
            await b.files.wait_idle()
            kinds = [n.kind for n in b.recent_events() if n.fields.get("file_id") == fid]
            assert "download.progress" not in kinds and "download.complete" not in kinds
            assert not b.files.blobs.has(hashlib.sha256(payload).hexdigest())


async def test_a_cancel_between_two_attempts_is_not_lost(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: the server closes after each upload, so the second upload finds
    # its kept connection closed and runs again on a new one; the transfer is cancelled
    # while the worker closes the dead connection, between the two attempts.
    _server_closes_after_each_upload(monkeypatch)  # type: ignore[arg-type]
    closing, release = trio.Event(), trio.Event()
    real_close = WorkerConnection.close
    armed = [False]

    async def slow_close(self: WorkerConnection) -> None:
        if armed[0]:
            armed[0] = False
            closing.set()
            await release.wait()
        await real_close(self)

    monkeypatch.setattr(WorkerConnection, "close", slow_close)  # type: ignore[attr-defined]
    options = FileOptions(uploads=1, downloads=1, keep_connection=30.0)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            await a.files.save(os.urandom(100), path="first")
            await a.files.wait_idle()
            armed[0] = True
            data = os.urandom(64 * 1024)
            fid = await a.files.save(data, path="second")
            await closing.wait()
            # What a canceller does (a delete's reconcile, say): its decision, the row
            # goes, then the cancel; once only (a reconcile may call again later, and
            # would hide a cancel lost here).
            a.files._states.set_many([((fid, "upload"), None)])
            a.files.executor.cancel("upload", fid)
            release.set()
            digest = hashlib.sha256(data).hexdigest()
            while a.files.executor.moving("upload", digest):
                await a.files.executor.changed.event.wait()
            assert not (Path(server.db_path + ".blobs/default/blobs") / digest).exists()


async def test_a_cancel_racing_a_lost_connection_is_not_run_again(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: cancel() in the same scheduler step as the kept connection's
    # failure, with no checkpoint between: the attempt's scope never raises Cancelled,
    # yet the transfer was cancelled and must not run again on a new connection.
    failing, fail_now = trio.Event(), trio.Event()
    calls: list[str] = []
    real_upload = BlobClient.upload

    async def upload(self: BlobClient, content_hash: str, *args: object) -> None:
        calls.append(content_hash)
        if len(calls) == 2:  # the second upload, on the kept connection
            failing.set()
            await fail_now.wait()
            raise TransferFailed("test: the connection was lost", connection_lost=True)
        await real_upload(self, content_hash, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(BlobClient, "upload", upload)  # type: ignore[attr-defined]
    options = FileOptions(uploads=1, downloads=1, keep_connection=30.0)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            await a.files.save(b"one", path="one")
            await a.files.wait_idle()
            data = os.urandom(5000)
            fid = await a.files.save(data, path="two")
            await failing.wait()
            fail_now.set()
            # What a canceller does, in the same step: its decision (the row goes, as
            # when the file is deleted), then the cancel. No checkpoint in between.
            a.files._states.set_many([((fid, "upload"), None)])
            a.files.executor.cancel("upload", fid)
            while a.files.executor.moving("upload", hashlib.sha256(data).hexdigest()):
                await a.files.executor.changed.event.wait()
            assert len(calls) == 2
            kinds = [n.kind for n in a.recent_events() if n.fields.get("file_id") == fid]
            assert "upload.complete" not in kinds and "upload.error" not in kinds
