"""The file API's promises: wait_idle() after wait_synced(), metadata checked up front."""

from __future__ import annotations

import trio
import trio.testing

from trio_sync.server import MemoryBlobBackend

from .._virtual import World


async def test_wait_idle_after_wait_synced_includes_the_files_just_learnt(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: wait_synced() then wait_idle() on a client that has just learnt files. The
    # transfers were idle because the new files' downloads were not queued yet.
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a:
        first = await a.files.save(b"first", path="first")
        await a.files.wait_idle()
        await a.wait_synced()
        async with world.client("B") as b:
            await b.wait_synced()  # B learns the first file at start-up
            await b.files.wait_idle()
            assert b.files.has_contents(first)
            second = await a.files.save(b"second", path="second")
            await a.wait_synced()
            await b.wait_synced()  # and the second while it runs
            await b.files.wait_idle()
            assert b.files.has_contents(second)
