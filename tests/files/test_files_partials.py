"""Partial downloads: one transfer per blob, and nothing left of a deleted file's."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import trio
import trio.testing

import trio_sync
from trio_sync.files import FileBlobStore, FileOptions, MemoryBlobStore
from trio_sync.protocol import Message
from trio_sync.protocol._blob_messages import BlobChunk, DownloadBegin
from trio_sync.server import BlobLimits, MemoryBlobBackend

from .._virtual import World
from ..conftest import WAIT, ClientFactory


class _Wire:
    """Every message sent on the network, with when and by whom (a client's messages
    and the server's, told apart by type)."""

    def __init__(self, latency: float = 0.01) -> None:
        self.sent: list[tuple[float, Message]] = []
        self.latency = latency

    def __call__(self, message: Message) -> float:
        self.sent.append((trio.current_time(), message))
        return self.latency

    def count(self, kind: type) -> int:
        return sum(1 for _, message in self.sent if isinstance(message, kind))


async def test_files_with_the_same_contents_download_once(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: two files with identical contents, two download workers. Both downloads
    # wrote to the one partial of that hash at once (one of them failed with "the partial
    # download moved on", or both wrote the same offset).
    wire = _Wire()
    world.network.delay = wire
    await world.start_server(blobs=MemoryBlobBackend(), blob_limits=BlobLimits(chunk_bytes=65536))
    contents = bytes(range(256)) * 4096  # 1 MiB, 16 chunks
    async with world.client("A") as a:
        fids = [await a.files.save(contents, path=f"copy{n}") for n in range(3)]
        await a.files.wait_idle()
        await a.wait_synced()
    async with world.client("B", files=FileOptions(downloads=2)) as b:
        await b.wait_synced()
        await b.files.wait_for(lambda files: all(files.has_contents(fid) for fid in fids))
        await b.files.wait_idle()
        assert [await b.files.read(fid) for fid in fids] == [contents] * 3
        states = [b.files.state(fid).download for fid in fids]
        assert [s.status if s else None for s in states] == ["done"] * 3
        assert "download.error" not in [note.kind for note in b.recent_events()]
    # One transfer served the three files: the blob crossed the wire once.
    assert wire.count(DownloadBegin) == 1
    assert wire.count(BlobChunk) == 16 * 2  # A's upload, B's download


class _FailingAppend:
    """A fault hook for a memory blob store: the ``nth`` chunk write fails (ENOSPC)."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.appends = 0

    def __call__(self, what: str) -> None:
        if what == "append":
            self.appends += 1
            if self.appends == self.nth:
                raise OSError(errno.ENOSPC, "injected: no space left")


async def test_a_deleted_files_partial_download_is_removed(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: B's download stopped half-way (a write failed; B backs off), then A deleted
    # the file. The partial stayed on B's disk for ever.
    await world.start_server(blobs=MemoryBlobBackend(), blob_limits=BlobLimits(chunk_bytes=65536))
    contents = bytes(range(256)) * 4096  # 1 MiB, 16 chunks
    blobs = MemoryBlobStore(fault=_FailingAppend(3))
    async with world.client("A") as a, world.client("B", files=FileOptions(blob_store=blobs)) as b:
        fid = await a.files.save(contents, path="doomed")
        info = a.files.get(fid)
        assert info is not None
        notes = b.subscribe()
        async for note in notes:
            if note.kind == "download.error":
                break
        assert blobs.partial_size(info.content_hash) == 2 * 65536
        await a.files.delete(fid)
        await b.files.wait_for(lambda files: files.state(fid).download is None)
        assert blobs.partial_size(info.content_hash) == 0
        assert not blobs.has(info.content_hash)


class _GatedStore(FileBlobStore):
    """B's blob store: every chunk write after the first waits (in its worker thread)
    until the test opens the gate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.first_written = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def append_partial(self, content_hash: str, offset: int, data: bytes) -> None:
        if offset > 0 and not self.gate.wait(WAIT):
            raise OSError(errno.EIO, "the test never opened the gate")
        super().append_partial(content_hash, offset, data)
        if offset == 0:
            trio.from_thread.run_sync(self.first_written.set, trio_token=self._token)


async def test_a_partial_written_after_its_file_was_deleted_is_removed_too(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # The delete arrives while a chunk is being written: the transfer is cancelled, but
    # the write finishes first (a thread's work is never abandoned). The partial goes
    # once that write is done, not before (the write would make it again).
    blobs = _GatedStore(tmp_path / "b.blobs")
    try:
        with trio.fail_after(WAIT):
            async with (
                open_test_client(server.url, "A") as a,
                open_test_client(server.url, "B", files=FileOptions(blob_store=blobs)) as b,
            ):
                fid = await a.files.save(os.urandom(1024 * 1024), path="doomed")
                info = a.files.get(fid)
                assert info is not None
                partial = blobs.root / "partial" / info.content_hash
                await blobs.first_written.wait()
                await a.files.delete(fid)
                # B folded the delete: its download is cancelled, the second chunk's
                # write still waits at the gate.
                await b.files.wait_for(lambda files: files.state(fid).download is None)
                assert b.files.executor.moving("download", info.content_hash)
                blobs.gate.set()
                await b.files.wait_for(
                    lambda files: not files.executor.moving("download", info.content_hash)
                )
                await b.files.wait_idle()
                assert not partial.exists()
                assert info.content_hash not in blobs.hashes()
    finally:
        blobs.gate.set()
