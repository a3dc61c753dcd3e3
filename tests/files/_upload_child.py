"""A client process for the SIGKILL test: saves a file once, then uploads until idle.

Usage: python -m tests.files._upload_child URL STORE SOURCE
Prints "progress <bytes>" lines as the upload moves and "idle" when it is done.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

import trio_sync


async def main(url: str, store: str, source: str) -> None:
    async with trio_sync.open_client(url, store, client_id="K") as client:
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
    trio.run(main, *sys.argv[1:4])
