"""File sync between real clients: over real WebSockets on loopback, or in the virtual
world (tests/_virtual.py) where a race has to be placed exactly."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

import trio_sync
from trio_sync.files import FileOptions, RetryPolicy, TransferState
from trio_sync.files._reconcile import Reconciler
from trio_sync.files._state import TransferStateStore
from trio_sync.server import MemoryBlobBackend

from .._virtual import World
from ..conftest import WAIT, ClientFactory
from ._holds import (
    CopyHold,
    DecisionHold,
    LateQueuedWrite,
    hold_commits_of_updates,
    hold_uploads,
)


async def test_two_clients_sync_twenty_files_of_mixed_sizes(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    rng = random.Random(7)
    sizes = [0, 1, 100, 4096, 256 * 1024, 256 * 1024 + 1, 50 * 1024 * 1024]
    sizes += [rng.randrange(0, 3 * 1024 * 1024) for _ in range(20 - len(sizes))]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 * 1024 * 1024))
    expected: dict[str, str] = {}
    with trio.fail_after(WAIT * 4):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            for i, size in enumerate(sizes):
                if size == 50 * 1024 * 1024:
                    fid = await a.files.save(big, path=f"f{i}")
                    expected[fid] = hashlib.sha256(big.read_bytes()).hexdigest()
                else:
                    data = rng.randbytes(size)
                    fid = await a.files.save(data, path=f"f{i}", metadata={"n": i})
                    expected[fid] = hashlib.sha256(data).hexdigest()
            await a.files.wait_idle()
            await a.wait_synced()
            assert a.status.state == "synced"
            await b.files.wait_for(
                lambda files: (
                    len(files.list()) == 20 and all(files.has_contents(fid) for fid in expected)
                )
            )
            for fid, digest in expected.items():
                path = b.files.local_path(fid)
                assert path is not None
                assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
                assert b.files.state(fid).download is not None
            assert [(f.id, f.content_hash, f.size) for f in a.files.list()] == [
                (f.id, f.content_hash, f.size) for f in b.files.list()
            ]
            small = next(f for f in b.files.list() if f.size == 100)
            assert hashlib.sha256(await b.files.read(small.id)).hexdigest() == expected[small.id]


async def test_a_file_is_known_as_soon_as_its_event_is_synced(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: read() right after wait_synced() on a client that has just learnt the file.
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fids = [await a.files.save(f"file {n}".encode(), path=f"f{n}") for n in range(20)]
            await a.files.wait_idle()
            await a.wait_synced()
        for attempt in range(3):
            async with open_test_client(server.url, f"B{attempt}") as b:
                await b.wait_synced()
                assert await b.files.read(fids[-1]) == b"file 19"


async def test_files_with_the_same_contents_download_one_at_a_time(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: four files with the same contents wait on a fresh client's paused executor;
    # it resumes, and its two download workers wake together. Both used to start on the
    # one shared partial (a worker claimed the contents only after its first await): each
    # saw the other's bytes ("the partial download moved on"), and the mixed partial
    # failed its hash. Seen as a flaky test_a_blob_that_rotted_on_the_server_....
    data = os.urandom(2 * 1024 * 1024)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            fids = [await a.files.save(data, path=f"copy{n}") for n in range(4)]
            await a.files.wait_idle()
            await a.wait_synced()
        errors: list[tuple[str, dict[str, object]]] = []

        def trace(what: str, details: dict[str, object]) -> None:
            if what == "download.error":
                errors.append((what, details))

        async with open_test_client(server.url, "B", trace=trace) as b:
            b.files.executor.pause()  # before it can pull anything
            notes = b.subscribe(buffer=10_000)
            moving: set[object] = set()
            most_at_once = 0

            async def watch() -> None:
                nonlocal most_at_once
                async for note in notes:
                    if note.kind == "download.start":
                        moving.add(note.fields["file_id"])
                        most_at_once = max(most_at_once, len(moving))
                    elif note.kind in ("download.complete", "download.error"):
                        moving.discard(note.fields["file_id"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await b.wait_synced()
                await b.files.wait_for(lambda files: files.executor.queues["download"].queued == 4)
                b.files.executor.resume()
                await b.files.wait_for(lambda files: all(map(files.has_contents, fids)))
                nursery.cancel_scope.cancel()
            assert errors == []
            assert most_at_once == 1
            for fid in fids:
                assert await b.files.read(fid) == data


async def _settled(uploader: trio_sync.Client, *others: trio_sync.Client) -> None:
    """Until ``uploader`` has sent everything it saved, then each of ``others`` has
    caught up with it (events and file contents). Stopped before (the test's deadline),
    it prints what each client's files and transfers were then: pytest shows it with the
    failure, so a rare hang can be told from one CI log."""
    try:
        await uploader.files.wait_idle()
        await uploader.wait_synced()
        for other in others:
            await other.wait_synced()
            await other.files.wait_idle()
    except BaseException:
        print("not settled:\n" + "\n".join(_describe(c) for c in (uploader, *others)))
        raise


def _describe(client: trio_sync.Client) -> str:
    files = client.files
    lines = [f"{client.client_id}: {client.status.state}, transfers {files.executor.describe()}"]
    for info in files.list():
        lines.append(
            f"  {info.id} {info.content_hash[:12]} deleted={info.deleted}: {files.state(info.id)}"
        )
    return "\n".join(lines)


async def test_a_file_updated_back_to_back_never_runs_one_transfer_twice(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: A updates one file 200 times in a row; B follows. Two bugs showed:
    # - a transfer queued again while its worker was still writing its outcome started
    #   in a second worker: the two runs shared one set of books, and a worker died
    #   (KeyError), every time;
    # - about one run in ten, A's reconcile ran between an update's upload row and its
    #   event: taking the newest contents for beaten ones, it dropped their upload. A
    #   said "synced"; B waited for contents the server never got.
    troubles: list[tuple[str, str, dict[str, object]]] = []

    def watch(who: str) -> Callable[[str, dict[str, object]], None]:
        def trace(what: str, details: dict[str, object]) -> None:
            if what == "files.worker_died":
                troubles.append((who, what, details))

        return trace

    with trio.fail_after(WAIT * 2):
        async with (
            open_test_client(server.url, "A", trace=watch("A")) as a,
            open_test_client(server.url, "B", trace=watch("B")) as b,
        ):
            fid = await a.files.save(os.urandom(64 * 1024), path="x")
            for _ in range(200):
                last = os.urandom(64 * 1024)
                await a.files.update(fid, last)
            await _settled(a, b)
            assert troubles == []
            assert await b.files.read(fid) == last
            for client in (a, b):
                states = client.files.state(fid)
                for state in (states.upload, states.download):
                    assert state is None or state.status == "done", state


async def test_a_queued_row_for_contents_the_file_no_longer_has_is_not_picked_for_ever(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: B's download row says "queued" for contents its file no longer has, and the
    # key is queued. A worker picked it, found nothing to move, saw the row still
    # "queued" and queued it again: two workers spun on it at full speed and wait_idle()
    # never returned (1 run in ~15 of the back-to-back test above, where a download
    # stopped for newer contents put its "queued" back and so made the decision that
    # stopped it skip its write: TransferStateStore.set_if_contents_unchanged).
    picks = [0]
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            fid = await a.files.save(os.urandom(1000), path="x")
            await _settled(a, b)
            executor = b.files.executor
            real_transfer = executor._transfer

            async def counted(*args: object) -> None:
                picks[0] += 1
                await real_transfer(*args)  # type: ignore[arg-type]

            executor._transfer = counted  # type: ignore[method-assign]
            gone = TransferState("queued", "0" * 64)
            b.files._states.set_many([((fid, "download"), gone)])
            executor.enqueue("download", fid)
            await b.files.wait_idle()
            assert picks[0] == 1
            assert b.files.has_contents(fid)


async def test_an_update_racing_another_clients_delete_uploads_nothing(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (found by a hostile review): A updates a file while C deletes it; the delete
    # reaches A while A stores the new contents. A's update changes nothing (a deleted
    # file stays deleted), yet A queued the upload and sent all of it (19 runs in 20
    # with 20 MB), and wait_idle() waited for it.
    hold = CopyHold()
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "C") as c,
        ):
            fid = await a.files.save(b"first", path="x")
            await _settled(a, c)
            a.files.blobs.fault = hold  # type: ignore[attr-defined]
            hold.armed = True
            newer = os.urandom(5000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.files.update, fid, newer)
                await trio.to_thread.run_sync(hold.copying.wait, WAIT)
                await c.files.delete(fid)
                await a.files.wait_for(
                    lambda files: (info := files.get(fid)) is None or info.deleted
                )
                hold.release.set()
            await a.files.wait_idle()
            await a.wait_synced()
            held = Path(server.db_path + ".blobs/default/blobs")
            assert not (held / hashlib.sha256(newer).hexdigest()).exists()
            assert a.files.state(fid).upload is None


async def test_a_page_of_new_files_queues_their_downloads_in_one_write(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # A client that hears of many files at once (joining late here) writes their
    # download rows in one transaction, not one fsync per file.
    writes: list[list[object]] = []
    real_set = TransferStateStore.set_if_contents_unchanged

    def counting_set(self: TransferStateStore, changes: object) -> int:
        rows = list(changes)  # type: ignore[call-overload]
        writes.append(rows)
        return real_set(self, rows)

    monkeypatch.setattr(TransferStateStore, "set_if_contents_unchanged", counting_set)  # type: ignore[attr-defined]
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            ids = [await a.files.save(os.urandom(500 + n), path=f"f{n}") for n in range(12)]
            await a.files.wait_idle()
            await a.wait_synced()
            writes.clear()
            async with open_test_client(server.url, "B") as b:
                await b.wait_synced()
                await b.files.wait_for(lambda files: all(files.has_contents(f) for f in ids))
                queued = [
                    rows
                    for rows in writes
                    if any(key[1] == "download" for key, _, _ in rows)  # type: ignore[attr-defined]
                ]
                assert sum(len(rows) for rows in queued) == 12
                assert len(queued) <= 2  # one per page of facts (one page here, usually)


async def test_a_local_update_during_a_reconcile_is_not_overwritten_by_it(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # What was tried: B decides to download A's update (H1) of X; before B writes that
    # row, B updates X itself (H2: its rows say so). The decision, taken on the view
    # from before, wrote "download H1 queued" over them: a row for contents no version
    # of X has, queued again and dropped at every start.
    hold = DecisionHold(monkeypatch, skip_empty=True)  # type: ignore[arg-type]
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            fid = await a.files.save(b"zero", path="x")
            await a.files.wait_idle()
            assert await b.files.read(fid) == b"zero"
            await b.files.wait_idle()
            hold.armed = True
            await a.files.update(fid, b"one" * 1000)
            await hold.deciding.wait()
            two = b"two" * 1000
            await b.files.update(fid, two)
            hold.release.set()
            await b.files.wait_idle()
            await b.wait_synced()
            info = b.files.get(fid)
            assert info is not None and info.content_hash == hashlib.sha256(two).hexdigest()
            download = b.files.state(fid).download
            assert download is None or download.content_hash == info.content_hash
            assert await b.files.read(fid) == two


async def test_new_contents_held_already_mark_the_download_done_for_them(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (found by a hostile review): A updates X to the contents of another file Y
    # that B holds already. B had nothing to download, so it never looked at X's row:
    # files.state(X) went on saying "download done" for X's old contents.
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            shared = os.urandom(3000)
            x = await a.files.save(os.urandom(2000), path="x")
            await a.files.save(shared, path="y")
            await _settled(a, b)
            await a.files.update(x, shared)
            await _settled(a, b)
            wanted = hashlib.sha256(shared).hexdigest()
            assert b.files.get(x).content_hash == wanted  # type: ignore[union-attr]
            assert b.files.state(x).download == TransferState("done", wanted)
            assert await b.files.read(x) == shared


async def test_no_download_is_decided_while_the_client_saves_the_same_file(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (found by a hostile review): B updates X; after B's rows are written and
    # before its event is committed, A's update of X reaches B, and B queues its
    # download over the rows of B's own save. B's event, ordered after A's, wins: the
    # row said "download queued" for contents X no longer has, and the download ran.
    # Now the fold leaves the rows of a file being saved alone (B's save settles them).
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            x = await a.files.save(b"zero", path="x")
            await _settled(a, b)
            release = trio.Event()
            committing = hold_commits_of_updates(b, release)
            from_a = os.urandom(4000)
            from_b = os.urandom(5000)
            from_a_hash = hashlib.sha256(from_a).hexdigest()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.files.update, x, from_b)
                await committing.wait()
                await a.files.update(x, from_a)
                await b.files.wait_for(
                    lambda files: files.get(x).content_hash == from_a_hash  # type: ignore[union-attr]
                )
                await b.files.wait_idle()  # B's fold of A's update is reconciled
                mine = hashlib.sha256(from_b).hexdigest()
                assert b.files.state(x).download == TransferState("done", mine)
                release.set()
            await _settled(b, a)
            assert b.files.get(x).content_hash == mine  # type: ignore[union-attr]
            assert b.files.state(x).download == TransferState("done", mine)
            assert await a.files.read(x) == from_b


async def test_a_download_waiting_for_an_upload_to_come_is_not_failing(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried (a hostile review): B's download of contents A had not uploaded yet was
    # announced as download.error, and its row's attempts went past max_attempts (31
    # against 4), as if it failed. It waits: missing=True, no attempt counted.
    quick = FileOptions(retry=RetryPolicy(base=0.01, cap=0.05, max_attempts=2))
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B", files=quick) as b,
        ):
            notes = b.subscribe(buffer=10_000)
            uploads_may_go = hold_uploads(a)
            data = os.urandom(50_000)
            x = await a.files.save(data, path="x")
            waited = 0
            async for note in notes:
                if note.kind == "download.error" and note.fields["file_id"] == x:
                    assert note.fields["missing"] is True and note.fields["attempts"] == 0
                    waited += 1
                    if waited == 4:  # twice max_attempts
                        break
            state = b.files.state(x).download
            assert state is not None and (state.status, state.attempts) == ("queued", 0)
            # B's status says what it waits for (it said "synced", one download pending).
            waiting = await b.wait_status(lambda s: s.downloads_waiting_for_upload == 1)
            assert waiting.downloads_pending == 1 and waiting.downloads_failed == 0
            # And whom (a second review: it did not say which client owed the upload).
            assert waiting.waiting_for_uploads_from == ("A",)
            uploads_may_go.set()
            assert await b.files.read(x) == data
            await b.files.wait_idle()
            assert b.status.downloads_waiting_for_upload == 0
            assert b.status.waiting_for_uploads_from == ()


@asynccontextmanager
async def _two_clients_holding_x(
    world: World, contents: bytes
) -> AsyncIterator[tuple[trio_sync.Client, trio_sync.Client, str]]:
    """A server and clients A and B of the virtual world; A saved file X (``contents``),
    and both are synced and idle."""
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a, world.client("B") as b:
        x = await a.files.save(contents, path="x")
        for client in (a, b):
            await client.wait_synced()
            await client.files.wait_idle()
        yield a, b, x


async def test_a_download_decided_during_the_clients_save_never_lands_after_it(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried (an audit's item): B updates X; A's update of X reaches B before B's event
    # is committed, and B's fold decides to download A's contents, on the rows of B's
    # save ("download done" for B's contents: the contents it checks). Its write was
    # still on its way (a worker thread, held here) when B's commit returned: the save
    # read its own "done" row and had nothing to put right; then the write landed.
    # files.state(X).download said "queued" for contents X no longer has (no transfer
    # ran: its target was gone) until B's event came back from the server: never,
    # while B hears nothing from it.
    async with _two_clients_holding_x(world, b"zero") as (a, b, x):
        updated = trio.Event()  # B's update returned
        late = LateQueuedWrite(b, x, until=updated)
        late.watching = False
        release = trio.Event()
        committing = hold_commits_of_updates(b, release)
        from_b = os.urandom(5000)

        async def update_b() -> None:
            await b.files.update(x, from_b)
            updated.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(update_b)
            await committing.wait()  # B's rows are written, its commit held
            late.watching = True
            await a.files.update(x, os.urandom(4000))
            await late.decided.wait()
            world.drops["B"] = lambda message: True  # B's event never comes back
            release.set()
        await late.reconciled.wait()
        mine = hashlib.sha256(from_b).hexdigest()
        assert b.files.get(x).content_hash == mine
        row = b.files.state(x).download
        assert row == TransferState("done", mine), f"{row} while X has {mine[:12]}"


async def test_a_download_decided_before_the_clients_save_never_lands_after_it(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: A updates X and B's fold decides to download A's contents, on B's row
    # "download done" for the contents B holds; its write is late (a worker thread,
    # held here). Meanwhile B saves X back to those very contents: the save's rows are
    # what the fold read, so its compare-and-set passes when it lands, after the save
    # looked at its rows. B's event wins (ordered after A's), yet the row said "queued"
    # for A's contents until that event came back: never, while B hears nothing.
    zero = b"zero"
    async with _two_clients_holding_x(world, zero) as (a, b, x):
        saved = trio.Event()  # B's save of X returned
        late = LateQueuedWrite(b, x, until=saved)
        await a.files.update(x, os.urandom(4000))
        await late.decided.wait()
        world.drops["B"] = lambda message: True  # B's event never comes back
        await b.files.update(x, zero)
        saved.set()
        await late.reconciled.wait()
        mine = hashlib.sha256(zero).hexdigest()
        assert b.files.get(x).content_hash == mine  # type: ignore[union-attr]
        row = b.files.state(x).download
        assert row == TransferState("done", mine), f"{row} while X has {mine[:12]}"
        assert x not in b.files.executor.queues["download"]  # and no download of A's runs


async def test_a_read_during_the_clients_own_save_returns_what_it_saved(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: B updates X and, while its commit is held, A's update of X reaches B and B
    # reads X. B's own contents win (its event is ordered after A's): the read waits for
    # B's save and returns B's bytes. Before, it downloaded A's contents with priority
    # and returned them, contents X was never going to have.
    async with _two_clients_holding_x(world, b"zero") as (a, b, x):
        release = trio.Event()
        committing = hold_commits_of_updates(b, release)
        from_a, from_b = os.urandom(4000), os.urandom(5000)
        read: list[bytes] = []

        async def read_x() -> None:
            read.append(await b.files.read(x))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.files.update, x, from_b)
            await committing.wait()
            await a.files.update(x, from_a)
            from_a_hash = hashlib.sha256(from_a).hexdigest()
            await b.files.wait_for(lambda files: files.get(x).content_hash == from_a_hash)  # type: ignore[union-attr]
            nursery.start_soon(read_x)
            await trio.testing.wait_all_tasks_blocked()
            await b.files.wait_idle()  # (a download the read asked for would run here)
            assert read == []
            release.set()
        assert read == [from_b]
        await b.wait_synced()
        assert b.files.get(x).content_hash == hashlib.sha256(from_b).hexdigest()  # type: ignore[union-attr]


async def test_a_local_update_during_a_reconcile_of_held_contents_is_not_overwritten(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # Tried (found by a hostile review): as above, with B's contents held by A already
    # (file Y has them). The reconcile listed (X, B's contents) before its store hops;
    # A's own update of X ended meanwhile; the reconcile then set X's download "done"
    # for B's contents over the rows of A's update, which the server orders last.
    hold = DecisionHold(monkeypatch)  # type: ignore[arg-type]
    decided = trio.Event()
    real_done = Reconciler.downloads_done_for_held

    async def noted_done(self: Reconciler, files: Any) -> None:
        await real_done(self, files)
        if hold.release.is_set():
            decided.set()

    monkeypatch.setattr(Reconciler, "downloads_done_for_held", noted_done)  # type: ignore[attr-defined]
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            shared = os.urandom(3000)
            x = await a.files.save(b"old", path="x")
            await a.files.save(shared, path="y")
            await _settled(a, b)
            hold.armed = True
            await b.files.update(x, shared)
            await hold.deciding.wait()
            mine = os.urandom(2000)
            await a.files.update(x, mine)
            hold.release.set()
            await decided.wait()
            mine_hash = hashlib.sha256(mine).hexdigest()
            assert a.files.state(x).download == TransferState("done", mine_hash)


async def test_a_requeue_of_own_contents_never_overwrites_a_save_made_meanwhile(
    server: trio_sync.Server, open_test_client: ClientFactory, monkeypatch: object
) -> None:
    # Tried (left untried by a review, written here): A's upload row names contents no
    # event has (a crash between a save's rows and its event), so a reconcile decides to
    # queue A's current contents again. Before it writes that, A updates the file: the
    # reconcile wrote its rows over the update's, the update's contents were never
    # uploaded, and the others could not get them.
    hold = DecisionHold(monkeypatch)  # type: ignore[arg-type]
    with trio.fail_after(WAIT):
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            x = await a.files.save(b"current", path="x")
            await _settled(a, b)
            never_recorded = TransferState("queued", "0" * 64)
            a.files._states.set_many([((x, "upload"), never_recorded)])
            hold.armed = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.files._reconciler.reconcile, {x})
                await hold.deciding.wait()  # it decided to queue "current" again
                newer = os.urandom(4000)
                await a.files.update(x, newer)
                hold.release.set()
            await _settled(a, b)
            newer_hash = hashlib.sha256(newer).hexdigest()
            assert a.files.state(x).upload == TransferState("done", newer_hash)
            assert await b.files.read(x) == newer
