"""Partial downloads: one transfer per blob, and nothing left of a deleted file's."""

from __future__ import annotations

import trio
import trio.testing

from trio_sync.files import FileOptions
from trio_sync.protocol import Message
from trio_sync.protocol._blob_messages import BlobChunk, DownloadBegin
from trio_sync.server import BlobLimits, MemoryBlobBackend

from .._virtual import World


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
