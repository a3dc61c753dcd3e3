"""A client process for the SIGKILL test: saves a file once, then uploads until idle.

Usage: python -m tests.files._upload_child URL STORE SOURCE [STALL_AT]
Prints "progress <bytes>" lines as the upload moves and "idle" when it is done. With
STALL_AT, reading the local blob at or past that offset never returns: the line
"stalled <offset>" says that every chunk before it was handed to the connection, and the
process waits there to be killed (an upload on loopback is too fast to catch otherwise).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import trio

import trio_sync
from trio_sync.files import FileBlobStore, FileOptions


class _StallingStore(FileBlobStore):
    def __init__(self, root: str, stall_at: int) -> None:
        super().__init__(root)
        self._stall_at = stall_at

    def read(self, content_hash: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset >= self._stall_at:
            print("stalled", offset, flush=True)
            threading.Event().wait()  # for ever: this runs in a worker thread
        return super().read(content_hash, offset, length)


async def main(url: str, store: str, source: str, stall_at: str | None = None) -> None:
    options = FileOptions()
    if stall_at is not None:
        options = FileOptions(blob_store=_StallingStore(f"{store}.blobs", int(stall_at)))
    async with trio_sync.open_client(url, store, client_id="K", files=options) as client:
        notes = client.subscribe(buffer=100_000)
        if not client.files.list():
            await client.files.save(Path(source), path="big.bin")
            print("saved", flush=True)

        async def report() -> None:
            async for note in notes:
                if note.kind in ("upload.start", "upload.progress", "upload.complete"):
                    print(note.kind, note.fields.get("bytes", 0), flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            await client.files.wait_idle()
            await client.wait_synced()
            nursery.cancel_scope.cancel()
        print("idle", flush=True)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:5])
