"""Recovery of file transfers: dead workers, stream restarts, deletes and races."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path
from typing import Any, cast

import pytest
import trio

import trio_sync
from trio_sync._broadcast import Broadcast
from trio_sync.files import (
    FileBlobStore,
    FileOptions,
    FileTransferError,
    RetryPolicy,
    TransferState,
)
from trio_sync.files._repair import (
    Repair,
    _repair,
    sound_copies,
    uploads_to_check,
    uploads_to_repeat,
)
from trio_sync.files._state import TransferStateStore

from ..conftest import WAIT, ClientFactory, ServerFactory
from ._holds import hold_uploads

BIG = 8 * 1024 * 1024
#: Asks the server about the contents held here every 0.2 s.
CHECKING = FileOptions(check_lost_every=0.2)
#: Retries a download that failed within a few hundredths of a second.
QUICK_RETRY = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05))


async def _next(subscription: trio_sync.Subscription, kind: str, **fields: object) -> None:
    async for note in subscription:
        if note.kind == kind and all(note.fields.get(k) == v for k, v in fields.items()):
            return


async def test_worker_killed_by_a_fault_is_restarted_by_the_heartbeat(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    options = FileOptions(uploads=1, downloads=1)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=options) as a:
            await a.wait_synced()
            kills = []

            def fault(direction: str, file_id: str) -> None:
                if not kills:
                    kills.append(file_id)
                    raise RuntimeError("injected: the worker dies")

            a.files.inject_fault(fault)  # type: ignore[arg-type]
            notes = a.subscribe()
            fid = await a.files.save(b"contents", path="a.txt")
            await _next(notes, "heartbeat.recovery", reason="stuck-queue")
            await a.files.wait_idle()
            assert kills == [fid]
            state = a.files.state(fid).upload
            assert state is not None and state.status == "done"
            assert a.files.executor.workers_alive("upload") == 1


async def test_a_stream_restart_mid_session_leaves_a_live_transfer_alone(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            await a.wait_synced()
            notes = a.subscribe(buffer=10_000)
            fid = await a.files.save(os.urandom(BIG), path="big")
            await _next(notes, "upload.progress")
            # The sync connection ends (the server drops it); the blob connection lives on.
            for session in list(server._control.hub.sessions):
                session.stop("test: restart the stream")
            await a.wait_status(lambda s: s.state != "synced")
            state = a.files.state(fid).upload
            assert state is not None and state.status == "in_progress"
            await a.files.wait_idle()
            await a.wait_synced()
            kinds = [n.kind for n in a.recent_events() if n.fields.get("file_id") == fid]
            assert kinds.count("upload.start") == 1
            assert "upload.error" not in kinds and "files.recovered" not in kinds
            assert a.files.state(fid).upload.status == "done"  # type: ignore[union-attr]


async def test_delete_during_upload_stops_it_everywhere(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            notes = a.subscribe(buffer=10_000)
            data = os.urandom(BIG)
            fid = await a.files.save(data, path="big")
            await _next(notes, "upload.progress")
            await a.files.delete(fid)
            await a.files.wait_idle()
            await a.wait_synced()
            await b.wait_synced()
            # The fact arrives first; the transfers it ends are dropped right after.
            await b.files.wait_for(
                lambda files: (
                    [f.deleted for f in files.list()] == [True]
                    and files.state(fid).download is None
                )
            )
            await b.files.wait_idle()
            assert a.files.state(fid) == b.files.state(fid)
            assert a.files.state(fid).upload is None and b.files.state(fid).download is None
            assert a.files.local_path(fid) is None and b.files.local_path(fid) is None
            digest = hashlib.sha256(data).hexdigest()
            assert digest not in a.files.blobs.hashes()  # garbage-collected
            blobs = server.db_path + ".blobs/default/blobs"
            assert digest not in os.listdir(blobs)


async def test_racing_updates_end_with_the_server_ordered_last_on_both(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            fid = await a.files.save(b"v0", path="doc")
            await a.wait_synced()
            await b.wait_synced()
            await b.files.wait_for(lambda files: files.has_contents(fid))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.files.update, fid, b"from A")
                nursery.start_soon(b.files.update, fid, b"from B")
            for client in (a, b):
                await client.files.wait_idle()
                await client.wait_synced()
            for client in (a, b):
                await client.wait_synced()
            last = [e for e in a.confirmed_events() if e.name == "file.updated"][-1]
            winner = b"from A" if last.client_id == "A" else b"from B"
            for client in (a, b):
                await client.files.wait_for(lambda files: files.has_contents(fid))
                assert await client.files.read(fid) == winner
            assert a.files.list() == b.files.list()


async def test_read_waits_for_the_download_and_goes_first(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            ids = [await a.files.save(os.urandom(1024 * 1024), path=f"{i}") for i in range(6)]
            small = await a.files.save(b"wanted", path="small")
            await a.files.wait_idle()
            await a.wait_synced()
        async with open_test_client(server.url, "B", files=FileOptions(downloads=1)) as b:
            await b.wait_synced()
            await b.files.wait_for(lambda files: files.get(small) is not None)
            assert await b.files.read(small) == b"wanted"
            await b.files.wait_idle()
            assert all(b.files.has_contents(fid) for fid in ids)


async def test_a_local_copy_gone_before_its_upload_is_an_error_not_a_hang(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: a cleaner deleted the local copy while its upload was queued. The worker
    # used to pick it up again at once, for ever, freezing the whole client.
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            await a.wait_synced()
            a.files.executor.pause()
            fid = await a.files.save(b"some contents", path="f")
            local = a.files.local_path(fid)
            assert local is not None
            await trio.Path(local).unlink()
            a.files.executor.resume()
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "is gone before it was uploaded" in (stuck.last_error or "")
            state = a.files.state(fid).upload
            assert state is not None and state.status == "error"
            # The event sync goes on meanwhile.
            await a.commit("still", {})
            await a.wait_status(lambda s: s.pending == 0)


async def test_an_upload_refused_for_good_keeps_the_client_out_of_synced(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # Tried: a file over the server's limit. The other clients can never get it, so the
    # owner must not show green ("synced" means every other client can get every file).
    from trio_sync.server import BlobLimits

    server = await open_server(blob_limits=BlobLimits(max_blob_bytes=1000))
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            big = await a.files.save(b"x" * 5000, path="big")
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "over the server's limit of 1000" in (stuck.last_error or "")
            assert stuck.uploads_pending == 0
            # Deleting the file ends it (found by a hostile review: the status stayed
            # "stuck" with that error, and wait_synced() never returned, because nothing
            # counted the uploads again once the delete had dropped the file's rows).
            await a.files.delete(big)
            assert a.files.state(big).upload is None
            synced = await a.wait_synced()
            assert synced.state == "synced" and synced.last_error is None


async def test_a_local_copy_that_rots_before_its_upload_is_said_corrupt_at_once(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a hostile review): the local blob's bytes changed on disk before its upload
    # ran. The server refused it ("do not match the hash: upload again") and the client
    # uploaded the same rotten bytes again, up to max_attempts, with that reason.
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            go = hold_uploads(a)
            data = os.urandom(300_000)
            fid = await a.files.save(data, path="doomed")
            _rot_the_local_copy(a, fid)
            # Its own read() found the copy rotten, dropped it and waited for ever for a
            # download of contents that exist nowhere else (a second hostile review).
            with pytest.raises(FileTransferError, match="corrupt and they were never uploaded"):
                await a.files.read(fid)
            go.set()
            stuck = await a.wait_status(lambda s: s.state == "stuck")
            assert "local copy of these contents is corrupt" in (stuck.last_error or "")
            state = a.files.state(fid).upload
            assert state is not None and state.status == "error" and state.attempts == 1
            with pytest.raises(FileTransferError, match="corrupt and they were never uploaded"):
                await a.files.read(fid)


async def test_contents_must_be_bytes_or_a_path(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    async with open_test_client(server.url, "A") as a:
        with pytest.raises(TypeError, match="not str"):
            await a.files.save("/etc/passwd", path="p")  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError, match="no file to copy"):
            await a.files.save(tmp_path / "missing.bin", path="p")
        # Tried (a hostile review): a folder was "no file to copy", as if nothing were there.
        with pytest.raises(FileNotFoundError, match="is a directory, not a file to copy"):
            await a.files.save(tmp_path, path="a folder")
        with pytest.raises(ValueError, match="path is not empty"):
            await a.files.save(b"x", path="")
        # A file id that is no str was "no file 5", as if merely unknown.
        with pytest.raises(TypeError, match="a file id is a str, not int"):
            await a.files.update(5, b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="a file id is a str, not NoneType"):
            await a.files.read(None)  # type: ignore[arg-type]
        assert a.files.list() == []


async def test_a_rotten_local_copy_is_never_returned_and_is_fetched_again(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: one byte of the local copy flipped on disk after it was uploaded.
    contents = os.urandom(100_000)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await _saved(a, contents)
            local = a.files.local_path(fid)
            assert local is not None
            rotten = bytearray(await trio.Path(local).read_bytes())
            rotten[500] ^= 0xFF
            await trio.Path(local).chmod(0o644)
            await trio.Path(local).write_bytes(bytes(rotten))
            assert await a.files.read(fid) == contents
            [note] = [n for n in a.recent_events() if n.kind == "recovery"]
            assert note["what"] == "corrupt-local-copy"


async def test_an_upload_the_server_lost_is_repaired_by_its_uploader_when_it_opens(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: A uploaded a file, then the server's copy rotted on its disk. B's download
    # had it set aside (it reads as missing) and B waited for ever: A, which still held
    # the contents, never uploaded them again, since its upload was done.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await _saved(a, data)
        on_disk = _rot_the_servers_copy(server, digest)
        async with open_test_client(server.url, "B", files=QUICK_RETRY) as b:
            await b.files.wait_for(
                lambda files: (
                    (state := files.state(fid).download) is not None
                    and "set it aside" in (state.last_error or "")
                )
            )
            assert not on_disk.exists()
            async with open_test_client(server.url, "A") as a:
                await b.files.wait_for(lambda files: files.has_contents(fid))
                assert await b.files.read(fid) == data
                await a.files.wait_idle()
                [repaired] = [n for n in a.recent_events() if n.kind == "recovery"]
                assert repaired["what"] == "lost-on-server" and repaired["file_id"] == fid
                checks = [n for n in a.recent_events() if n.kind == "files.checked"]
                assert [(n["blobs"], n["missing"]) for n in checks] == [(1, 1)]
                # A reconnect is no new lifecycle: the server is not asked again.
                await a.wait_synced()
                for session in list(server._control.hub.sessions):
                    if session.client_id == "A":
                        session.stop("test: a reconnect")
                await a.wait_status(lambda s: s.state != "synced")
                await a.wait_synced()
                await a.files.save(b"more", path="more")
                await a.files.wait_idle()
                assert len([n for n in a.recent_events() if n.kind == "files.checked"]) == 1
    assert on_disk.read_bytes() == data


async def _saved(client: trio_sync.Client, data: bytes) -> str:
    """Saves ``data`` on ``client`` and waits until the server holds it; its file id."""
    fid = await client.files.save(data, path="f")
    await client.files.wait_idle()
    await client.wait_synced()
    return fid


async def _rot_and_read_elsewhere(
    server: trio_sync.Server,
    open_test_client: ClientFactory,
    holder: trio_sync.Client,
    fid: str,
    data: bytes,
    how: str = "rewrite",
) -> Path:
    """Rots the server's copy of ``data`` (``how``: see :func:`_rot_the_servers_copy`); a
    new client reads ``fid`` all the same, since ``holder`` gave the contents back
    (checked). Returns where the server keeps them."""
    on_disk = _rot_the_servers_copy(server, hashlib.sha256(data).hexdigest(), how)
    async with open_test_client(server.url, "reader", files=QUICK_RETRY) as reader:
        await reader.wait_synced()
        assert await reader.files.read(fid) == data
    repaired = [n for n in holder.recent_events() if n.kind == "recovery"]
    assert [(n["what"], n["file_id"]) for n in repaired] == [("lost-on-server", fid)]
    return on_disk


@pytest.mark.parametrize("how", ["rewrite", "truncate", "extend"])
async def test_an_upload_the_server_lost_is_repaired_while_its_uploader_stays_open(
    server: trio_sync.Server, open_test_client: ClientFactory, how: str
) -> None:
    # Tried (a hostile review): the server's copy rotted while A, its uploader, stayed
    # open. B's download had it set aside and B waited for as long as A ran: A asked
    # the server about its uploads only when it opened. (A second review: a copy cut
    # short or grown on the server's disk was never set aside, since the client refused
    # the size offered before a byte was read; B gave up, "synced", A never knew. Big
    # enough that the server cannot have streamed it whole, hashing it, before B left.)
    data = os.urandom(4_000_000)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A", files=CHECKING) as a:
            fid = await _saved(a, data)
            on_disk = await _rot_and_read_elsewhere(server, open_test_client, a, fid, data, how)
    assert on_disk.read_bytes() == data


async def test_contents_only_downloaded_are_given_back_when_the_server_lost_them(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a hostile review): A uploaded a file and went away; B downloaded it; then
    # the server's copy rotted. Other clients waited for ever ("missing"): only an
    # uploader ever gave lost contents back, and B, which held them, was never asked.
    data = os.urandom(300_000)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await _saved(a, data)
        async with open_test_client(server.url, "B", files=CHECKING) as b:
            await b.wait_synced()
            assert await b.files.read(fid) == data
            on_disk = await _rot_and_read_elsewhere(server, open_test_client, b, fid, data)
            await b.files.wait_idle()
            state = b.files.state(fid).upload
            assert state is not None and state.status == "done"
            assert state.content_hash == hashlib.sha256(data).hexdigest()
            await b.wait_synced()
    assert on_disk.read_bytes() == data


async def test_a_rotten_copy_only_downloaded_is_not_given_back(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a second hostile review): B downloaded A's file, then B's copy rotted and
    # the server lost its own. B's check uploaded its rotten copy, which failed for good:
    # B "stuck" ("save the file again", a file B never saved), and B's read() said the
    # contents were never uploaded, even once A had given them back.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await _saved(a, data)
        async with open_test_client(server.url, "B", files=CHECKING) as b:
            await b.wait_synced()
            assert await b.files.read(fid) == data
            checks = b.subscribe(buffer=100)
            _rot_the_local_copy(b, fid)  # B's copy rots...
            (Path(server.db_path + ".blobs/default/blobs") / digest).unlink()  # ...and the server's
            await _next(checks, "files.checked", missing=1)
            assert b.files.state(fid).upload is None  # nothing given back from a rotten copy
            assert b.status.state == "synced"
            async with open_test_client(server.url, "A") as a:
                await a.files.wait_idle()  # A gave them back when it opened
                assert await b.files.read(fid) == data  # B fetches them again
            assert b.status.state == "synced"


async def test_a_file_event_naming_a_wrong_size_is_said_unobtainable_on_every_client(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a hostile review): an event committed by hand named real contents with a
    # wrong size. A client holding those contents marked the file's download done, its
    # size a lie; one without them gave up on the server's size. Now every client says
    # the same: the file cannot be had, and why.
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    lie = {"id": "lie", "path": "p", "hash": digest, "size": 10}
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            honest = await _saved(a, data)
            await a.commit("file.created", lie)
            await a.files.delete(honest)  # B never downloads these contents for it
            await a.wait_synced()
            await a.files.wait_for(lambda files: files.state("lie").download is not None)
            held_here = a.files.state("lie").download
            assert held_here is not None and held_here.status == "error"
            assert "contents are 300000 bytes but its event says 10" in str(held_here.last_error)
            with pytest.raises(FileTransferError, match="event names a wrong size"):
                await a.files.read("lie")
            assert a.files.has_contents(honest) is False  # deleted
            assert not a.files.has_contents("lie")  # what it names cannot be had
        async with open_test_client(server.url, "B", files=QUICK_RETRY) as b:
            await b.wait_synced()
            failed = await b.wait_status(lambda s: s.downloads_failed == 1)
            assert failed.downloads_pending == 0
            from_server = b.files.state("lie").download
            assert from_server is not None and from_server.attempts == 1
            assert "says its copy is sound" in str(from_server.last_error)
            with pytest.raises(FileTransferError, match="event names a wrong size"):
                await b.files.read("lie")


async def test_a_download_given_up_for_a_full_disk_is_tried_again_later(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Tried (a hostile review): B's disk was full while it downloaded; the download gave
    # up, and once there was room again B still lacked the file until an application
    # read() asked for it, or B opened again. (A second review: the partial that filled
    # the disk was kept while the download had given up, the disk left full.)
    full = [True]
    appended = [0]

    def fault(what: str) -> None:
        if full[0] and what == "append":
            appended[0] += 1
            if appended[0] > 1:  # a chunk written, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")

    data = os.urandom(600_000)  # three chunks
    options = FileOptions(
        retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=1),
        blob_store=FileBlobStore(tmp_path / "b-blobs", fault=fault),
        retry_given_up_every=0.2,
    )
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B", files=options) as b,
        ):
            fid = await a.files.save(data, path="f")
            await a.files.wait_idle()
            given_up = await b.wait_status(lambda s: s.downloads_failed == 1)
            assert given_up.state == "synced"  # the other clients can still get it
            assert not b.files.has_contents(fid)
            await b.files.wait_idle()  # its worker has dropped what it wrote
            assert appended[0] == 2 and os.listdir(tmp_path / "b-blobs" / "partial") == []
            full[0] = False  # room again
            await b.files.wait_for(lambda files: files.has_contents(fid))
            assert (await b.wait_status(lambda s: s.downloads_failed == 0)).downloads_failed == 0
            assert await b.files.read(fid) == data


async def test_a_file_updated_while_its_download_waits_to_retry_leaves_no_partial(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Tried (a second hostile review): B's download of A's file failed mid-way and waited
    # out its backoff with a partial on disk; B then updated the file itself. The
    # download was stopped, but its partial stayed for good (nothing referred to it).
    appended = [0]

    def fault(what: str) -> None:
        if what == "append":
            appended[0] += 1
            if appended[0] == 2:  # a chunk written, then an I/O error
                raise OSError(errno.EIO, "Input/output error")

    options = FileOptions(
        retry=RetryPolicy(base=60, cap=60),
        blob_store=FileBlobStore(tmp_path / "b-blobs", fault=fault),
    )
    partials = tmp_path / "b-blobs" / "partial"
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B", files=options) as b,
        ):
            fid = await _saved(a, os.urandom(600_000))  # three chunks
            await b.files.wait_for(
                lambda files: (
                    (state := files.state(fid).download) is not None and state.attempts == 1
                )
            )
            assert len(os.listdir(partials)) == 1  # waiting 60 s to resume it
            await b.files.update(fid, b"B's own contents")
            assert os.listdir(partials) == []


def _rot_the_local_copy(client: trio_sync.Client, file_id: str) -> None:
    """Overwrites ``client``'s local copy of the file's contents with other bytes of the
    same size (a bad disk, a stray write)."""
    local = client.files.local_path(file_id)
    assert local is not None
    local.chmod(0o644)
    local.write_bytes(bytes(local.stat().st_size))


def _rot_the_servers_copy(server: trio_sync.Server, digest: str, how: str = "rewrite") -> Path:
    """Rots the server's stored copy of ``digest`` (a bad disk, a stray write): other
    bytes of its size ("rewrite"), cut to half ("truncate") or with bytes added
    ("extend"); returns where it is."""
    on_disk = Path(server.db_path + ".blobs/default/blobs") / digest
    on_disk.chmod(0o644)
    size = on_disk.stat().st_size
    if how == "rewrite":
        on_disk.write_bytes(os.urandom(size))
    elif how == "truncate":
        os.truncate(on_disk, size // 2)
    else:
        with open(on_disk, "ab") as grown:
            grown.write(b"more")
    return on_disk


def test_a_copy_that_cannot_be_read_is_left_out_of_those_given_back(tmp_path: Path) -> None:
    # Tried (a third review): one unreadable downloaded copy made the whole check fail,
    # every time, so this client's own lost uploads were never given back either.
    store = FileBlobStore(tmp_path / "blobs")
    good, _ = store.put(b"good")
    unreadable, _ = store.put(b"unreadable")
    path = store.local_path(unreadable)
    assert path is not None
    path.chmod(0o644)
    path.unlink()
    path.mkdir()  # reading it fails: "Is a directory"
    assert sound_copies(store, [good, unreadable, "0" * 64]) == {good}


def test_which_contents_are_asked_about_and_uploaded_again() -> None:
    h1, h2, h3 = (hashlib.sha256(bytes([i])).hexdigest() for i in range(3))
    rows = {
        ("f1", "upload"): TransferState("done", h1),
        ("f2", "upload"): TransferState("done", h1),  # the same contents
        ("f3", "upload"): TransferState("done", h2),  # not held here any more
        ("f4", "upload"): TransferState("queued", h3),  # not uploaded yet
        ("f5", "download"): TransferState("done", h3),  # downloaded, not ours
        ("f6", "download"): TransferState("done", h3),
        ("f6", "upload"): TransferState("queued", h1),  # a save of other contents to go
        ("f7", "download"): TransferState("done", h1),  # ours, downloaded too
        ("f7", "upload"): TransferState("done", h1),
    }
    asked = uploads_to_check(rows, held={h1, h3})
    assert asked == {
        h1: [("f1", "upload"), ("f2", "upload"), ("f7", "download"), ("f7", "upload")],
        h3: [("f5", "download"), ("f6", "download")],
    }
    rows[("f2", "upload")] = TransferState("queued", h3)  # new contents meanwhile
    lost = "the server lost its copy"
    assert uploads_to_repeat(rows, asked, missing={h1, h3}) == [
        Repair(("f1", "upload"), TransferState("queued", h1, 0, lost), rows[("f1", "upload")]),
        Repair(("f7", "upload"), TransferState("queued", h1, 0, lost), rows[("f7", "upload")]),
        # Only downloaded: uploaded from here, provided the download row still names h3.
        Repair(
            ("f5", "upload"), TransferState("queued", h3, 0, lost), None, (("f5", "download"), h3)
        ),
    ]


def test_a_row_written_only_provided_another_still_names_the_contents(tmp_path: Path) -> None:
    old, new = (hashlib.sha256(bytes([i])).hexdigest() for i in range(2))
    states = TransferStateStore(str(tmp_path / "transfers.sqlite3"))
    try:
        states.set_many([(("f", "download"), TransferState("done", old))])
        upload = TransferState("queued", old)
        proviso = {("f", "upload"): (("f", "download"), new)}
        assert (
            states.set_if_contents_unchanged([(("f", "upload"), upload, None)], provided=proviso)
            == 0
        )
        assert states.get("f", "upload") is None
        proviso = {("f", "upload"): (("f", "download"), old)}
        assert (
            states.set_if_contents_unchanged([(("f", "upload"), upload, None)], provided=proviso)
            == 1
        )
        assert states.get("f", "upload") == upload
    finally:
        states.close()


async def test_a_repair_never_writes_over_contents_saved_while_it_waited(
    tmp_path: Path,
) -> None:
    # Tried: the repair decided, from the rows it read, to upload f1's old contents again
    # (the server lost them); before its write ran, a save of f1 wrote its own rows (new
    # contents to upload). Before, the repair wrote over them: the old contents were
    # uploaded for nothing and the new ones' row was gone until their event came back.
    old, new = (hashlib.sha256(bytes([i])).hexdigest() for i in range(2))
    states = TransferStateStore(str(tmp_path / "transfers.sqlite3"))
    key = ("f1", "upload")
    states.set_many([(key, TransferState("done", old))])
    saved = TransferState("queued", new)
    notes: list[str] = []
    queued: list[str] = []

    class Core:
        rng = random.Random(0)

        async def run_store(self, fn: Any, *args: Any) -> Any:
            if getattr(fn, "__name__", "") in ("set_many", "set_if_contents_unchanged"):
                states.set_many([(key, saved)])  # the save's rows land first
            return fn(*args)

        def trace(self, what: str, **details: object) -> None:
            pass

        def notify(self, kind: str, **fields: object) -> None:
            notes.append(kind)

    class Blobs:
        def hashes(self) -> list[str]:
            return [old, new]

    class Wire:
        async def missing(self, hashes: list[str]) -> list[str]:
            return [old]

    class Executor:
        online = True
        changed = Broadcast()

        def enqueue(self, direction: str, file_id: str) -> None:
            queued.append(file_id)

    try:
        await _repair(
            cast(Any, Core()),
            states,
            cast(Any, Blobs()),
            cast(Any, Wire()),
            cast(Any, Executor()),
            RetryPolicy(),
        )
        assert states.get("f1", "upload") == saved
        assert "recovery" not in notes and queued == []
    finally:
        states.close()


@pytest.mark.parametrize("keep_pending", [True, False])
async def test_after_a_reset_the_files_follow_the_new_servers_log(
    nursery: trio.Nursery, tmp_path: Path, open_test_client: ClientFactory, keep_pending: bool
) -> None:
    # Tried: the server's database rebuilt under a client that had synced files, then
    # reset(). The file view kept folding from its old position: the new log's files
    # (another client's, and this client's own kept ones) never showed, read() said
    # FileNotFound, and the old log's files stayed with their blobs.
    first: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "one.sqlite3"))
    with trio.fail_after(WAIT):
        async with open_test_client(first.url, "A") as a:
            gone = await a.files.save(b"on the old server", path="old")
            await a.files.wait_idle()
            await a.wait_synced()
        await first.shutdown()
        rebuilt: trio_sync.Server = await nursery.start(
            trio_sync.serve, str(tmp_path / "two.sqlite3")
        )
        async with open_test_client(rebuilt.url, "A") as a, open_test_client(rebuilt.url, "B") as b:
            theirs = await b.files.save(b"B's, on the new server", path="theirs")
            ours = await a.files.save(b"A's, kept through the reset", path="ours")
            await a.wait_status(lambda s: s.state == "incompatible")
            await a.reset(keep_pending=keep_pending)
            for client in (a, b, a):
                await client.wait_synced()
                await client.files.wait_idle()
            assert a.files.list() == b.files.list()
            assert await a.files.read(theirs) == b"B's, on the new server"
            if keep_pending:
                assert sorted(f.path for f in a.files.list()) == ["ours", "theirs"]
                assert await b.files.read(ours) == b"A's, kept through the reset"
            else:  # dropped with its event: not uploaded, nothing of it left here
                assert [f.path for f in a.files.list()] == ["theirs"]
                assert a.files.state(ours).upload is None and a.files.state(ours).download is None
                dropped = hashlib.sha256(b"A's, kept through the reset").hexdigest()
                assert dropped not in a.files.blobs.hashes()
                assert not (Path(rebuilt.db_path + ".blobs/default/blobs") / dropped).exists()
            assert a.files.get(gone) is None and a.files.state(gone).upload is None
            assert hashlib.sha256(b"on the old server").hexdigest() not in a.files.blobs.hashes()


async def test_a_cancel_that_queues_the_same_contents_again_is_not_undone_by_in_progress(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What was tried: whoever cancels a transfer decides what happens next; here it
    # cancels the upload as it starts and queues the same contents again (rows, then
    # enqueue, as the fold does when it re-points an upload). The transfer's own
    # "in_progress" report, on its way meanwhile, landed over that "queued": the upload
    # stayed "in_progress" with no transfer left to finish it, and wait_idle() returned
    # with the file never uploaded.
    from trio_sync.files._executor import TransferExecutor

    real_set_state = TransferExecutor._set_state
    armed = [True]

    async def set_state(
        self: TransferExecutor,
        direction: str,
        file_id: str,
        state: TransferState,
        seen: TransferState | None = None,
    ) -> None:
        if armed[0] and state.status == "in_progress":
            armed[0] = False
            self.cancel(direction, file_id)  # type: ignore[arg-type]
            queued = TransferState("queued", state.content_hash)
            self._states.set_many([((file_id, direction), queued)])
            self.enqueue(direction, file_id)  # type: ignore[arg-type]
        await real_set_state(self, direction, file_id, state, seen)  # type: ignore[arg-type]

    monkeypatch.setattr(TransferExecutor, "_set_state", set_state)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            await a.wait_synced()
            fid = await a.files.save(b"contents", path="a.txt")
            await a.files.wait_idle()
            assert not armed[0]
            state = a.files.state(fid).upload
            assert state is not None and state.status == "done"
