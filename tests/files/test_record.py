"""Recording new contents: the transfer rows and the event tell the same story, even when
tasks race on one file, a commit fails, or the client stops between the two writes."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_sync
from trio_sync import ClientClosed, StoreFull
from trio_sync.files import TransferState

from ..conftest import FAST, WAIT, ClientFactory


async def _free_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def _online_then_b_reads(
    tmp_path: Path, port: int, open_test_client: ClientFactory, fid: str, expected: bytes
) -> None:
    """Starts the server on ``port``; A (offline until now) uploads, and B reads."""
    url = f"ws://127.0.0.1:{port}"
    async with trio.open_nursery() as nursery:
        await nursery.start(trio_sync.serve, str(tmp_path / "server.sqlite3"), "127.0.0.1", port)
        async with open_test_client(url, "A") as a, open_test_client(url, "B") as b:
            await a.files.wait_idle()
            await a.wait_synced()
            current = a.files.get(fid)
            assert current is not None
            assert a.files.state(fid).upload == TransferState("done", current.content_hash)
            assert a.files.state(fid).download == TransferState("done", current.content_hash)
            await b.wait_synced()
            assert await b.files.read(fid) == expected
        nursery.cancel_scope.cancel()


async def test_updates_of_one_file_from_many_tasks_upload_the_one_that_won(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: 8 tasks of one client update one file at the same instant, 5 rounds. The
    # rows were written in one order and the events committed in another: the upload row
    # named contents that lost, and the winner was never uploaded (B waited for ever).
    blobs = Path(server.db_path + ".blobs/default/blobs")
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            fid = await a.files.save(b"first", path="x")
            for round_ in range(5):
                async with trio.open_nursery() as nursery:
                    for task in range(8):
                        body = f"round {round_} task {task}".encode()
                        nursery.start_soon(a.files.update, fid, body)
                await a.files.wait_idle()
                await a.wait_synced()
                winner = a.files.get(fid)
                assert winner is not None
                assert a.files.state(fid).upload == TransferState("done", winner.content_hash)
                assert (blobs / winner.content_hash).exists()
                await b.wait_synced()
                body = await b.files.read(fid)
                assert hashlib.sha256(body).hexdigest() == winner.content_hash


async def _offline_first_then_online(
    tmp_path: Path,
    open_test_client: ClientFactory,
    meddle: Callable[[trio_sync.Client, str], Awaitable[None]],
) -> None:
    """A saves "first contents" offline and ``meddle(a, file_id)`` runs; then the server
    starts on that port: A uploads, and B reads the first contents."""
    port = await _free_port()
    with trio.fail_after(WAIT):
        async with open_test_client(f"ws://127.0.0.1:{port}", "A") as a:
            fid = await a.files.save(b"first contents", path="x")
            await meddle(a, fid)
        await _online_then_b_reads(tmp_path, port, open_test_client, fid, b"first contents")


async def test_a_failed_commit_puts_the_rows_back_and_the_current_contents_still_upload(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    # Tried: the client's store is full when an update's event is committed (its
    # contents were stored fine), while the file's first contents wait to upload
    # (offline). The upload row was left for the contents never recorded, so the first
    # ones never reached the server.
    async def update_on_a_full_store(a: trio_sync.Client, fid: str) -> None:
        rows = a.files.state(fid)
        store = a._core.store
        write_batch = store.write_batch

        def full(works: object, *, durable: bool) -> object:
            if durable:
                raise StoreFull("disk full (injected)")
            return write_batch(works, durable=durable)  # type: ignore[arg-type]

        store.write_batch = full  # type: ignore[method-assign]
        with pytest.raises(StoreFull):
            await a.files.update(fid, b"second contents")
        store.write_batch = write_batch  # type: ignore[method-assign]
        assert a.files.state(fid) == rows
        assert a.files.get(fid).content_hash == rows.upload.content_hash  # type: ignore[union-attr]

    await _offline_first_then_online(tmp_path, open_test_client, update_on_a_full_store)


async def test_an_upload_row_for_contents_never_recorded_is_put_right_at_open(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    # Tried: the client stops between writing the rows of an update and committing its
    # event (a SIGKILL there, or a close the undo could not outlive). The row named
    # contents no event has; the next open dropped it as beaten by another client, and
    # this client's own current contents were never uploaded.
    async def rows_without_their_event(a: trio_sync.Client, fid: str) -> None:
        lost = hashlib.sha256(b"lost").hexdigest()
        rows = [((fid, "upload"), TransferState("queued", lost))]
        rows.append(((fid, "download"), TransferState("done", lost)))
        await a._core.run_store(a.files._states.set_many, rows)

    await _offline_first_then_online(tmp_path, open_test_client, rows_without_their_event)


async def test_saves_and_updates_after_the_client_closed_raise_client_closed(
    tmp_path: Path,
) -> None:
    # Tried: keep ``client.files`` past the ``open_client`` block and write through it
    # (an application task that outlived the client). It raised AttributeError from
    # deep inside the store.
    url = f"ws://127.0.0.1:{await _free_port()}"
    async with trio_sync.open_client(url, str(tmp_path / "a.sqlite3"), timings=FAST) as a:
        fid = await a.files.save(b"x", path="x")
    with trio.fail_after(WAIT):
        with pytest.raises(ClientClosed):
            await a.files.update(fid, b"y")
        with pytest.raises(ClientClosed):
            await a.files.save(b"z", path="z")


async def test_waits_on_files_end_with_client_closed_when_the_client_closes(
    tmp_path: Path,
) -> None:
    # Tried: read() of a file whose download cannot happen (offline, the local copy
    # gone), wait_idle() with an upload queued, and wait_for() of something that never
    # comes, while the client closes, and again after. Each waited for ever.
    url = f"ws://127.0.0.1:{await _free_port()}"
    outcomes: list[str] = []

    async def wait(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except ClientClosed:
            outcomes.append("closed")

    with trio.fail_after(WAIT):
        store = str(tmp_path / "a.sqlite3")
        async with (
            trio.open_nursery() as nursery,
            trio_sync.open_client(url, store, timings=FAST) as a,
        ):
            fid = await a.files.save(b"x", path="x")
            await a._core.run_store(a.files.blobs.delete, hashlib.sha256(b"x").hexdigest())
            nursery.start_soon(wait, partial(a.files.read, fid))
            nursery.start_soon(wait, a.files.wait_idle)
            nursery.start_soon(wait, partial(a.files.wait_for, lambda files: False))
            await trio.testing.wait_all_tasks_blocked()
            assert outcomes == []
        assert outcomes == ["closed", "closed", "closed"]
        never = partial(a.files.wait_for, lambda files: False)
        for call in (partial(a.files.read, fid), a.files.wait_idle, never):
            with pytest.raises(ClientClosed):
                await call()


async def test_an_update_being_recorded_keeps_the_status_out_of_synced(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: poll the status while one client updates a file over and over. Between
    # stopping the old contents' upload and the new event becoming pending, nothing was
    # owed in the status's eyes: "synced" showed while the contents the view still
    # showed (their upload just stopped) were not on the server.
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fid = await a.files.save(b"first", path="x")
            await a.files.wait_idle()
            await a.wait_synced()
            writer = a._core.writer
            commit, entered, release = writer.commit, trio.Event(), trio.Event()

            async def held(drafts: object) -> object:
                entered.set()
                await release.wait()
                return await commit(drafts)  # type: ignore[arg-type]

            monkeypatch.setattr(writer, "commit", held)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.files.update, fid, b"second")
                await entered.wait()
                assert (a.status.state, a.status.uploads_pending) == ("syncing", 1)
                release.set()
            await a.files.wait_idle()
            assert (await a.wait_synced()).uploads_pending == 0
