"""The file API's promises: wait_idle() after wait_synced(), metadata checked up front."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_sync import ClientClosed, InvalidEvent
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


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({1: "one"}, "1 at metadata "),
        ({"a": {2: "b"}}, "2 at metadata['a'] "),
        ({"a": [{"b": 1}, {(3, 4): 5}]}, "(3, 4) at metadata['a'][1] "),
        ({None: "x"}, "None at metadata "),
    ],
)
async def test_metadata_keys_must_be_strings_and_nothing_is_stored_otherwise(
    world: World,
    autojump_clock: trio.testing.MockClock,
    metadata: dict[object, object],
    where: str,
) -> None:
    # Tried: metadata={1: "one"} came back as {"1": "one"} (JSON turns keys into strings).
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a:
        with pytest.raises(TypeError, match=re.escape(where)):
            await a.files.save(b"contents", path="p", metadata=metadata)  # type: ignore[arg-type]
        fid = await a.files.save(b"contents", path="p", metadata={"kept": [1, {"x": None}]})
        await a.files.wait_idle()
        with pytest.raises(TypeError, match="metadata keys must be str"):
            await a.files.update(fid, b"new", metadata=metadata)  # type: ignore[arg-type]
        [info] = a.files.list()
        assert info.metadata == {"kept": [1, {"x": None}]}
        assert a.files.blobs.hashes() == [info.content_hash]  # "new" was never stored
        assert await a.files.read(fid) == b"contents"


async def test_metadata_is_a_mapping(world: World, autojump_clock: trio.testing.MockClock) -> None:
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a:
        with pytest.raises(TypeError, match="not list"):
            await a.files.save(b"x", path="p", metadata=[("a", 1)])  # type: ignore[arg-type]
        assert a.files.list() == [] and a.files.blobs.hashes() == []


async def test_a_path_that_is_not_a_string_is_refused(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: path=123 and path=None. save() returned an id and the blob uploaded, but
    # every client's fold skipped the fact: the file was known nowhere.
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a:
        for path in (123, None, b"p"):
            with pytest.raises(TypeError, match="path is a str"):
                await a.files.save(b"x", path=path)  # type: ignore[arg-type]
        assert a.files.list() == [] and a.files.blobs.hashes() == []
        assert a.pending_events() == []


async def test_a_refused_save_leaves_no_blob_behind(
    world: World, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Tried: metadata the event cannot carry (NaN, too large). The contents were stored
    # first, then the event refused: the blob stayed until the next change of the files.
    await world.start_server(blobs=MemoryBlobBackend())
    source = tmp_path / "source.bin"
    source.write_bytes(b"from a file")
    async with world.client("A") as a:
        for data in (b"some contents", source):
            with pytest.raises(InvalidEvent, match="are not JSON"):
                await a.files.save(data, path="p", metadata={"x": math.nan})
            with pytest.raises(InvalidEvent, match="exceeds the limit"):
                await a.files.save(data, path="p", metadata={"x": "y" * 2_000_000})
            # Tried (a hostile review): metadata that holds itself hung the whole process
            # in the check of its keys (the event loop blocked, no timeout could fire).
            itself: dict[str, object] = {}
            itself["a"] = itself
            for cyclic in (itself, {"x": [itself]}):
                with pytest.raises(InvalidEvent, match="metadata holds itself at metadata"):
                    await a.files.save(data, path="p", metadata=cyclic)
            # And (a second review) lists each holding the last one twice: a few objects,
            # gigabytes of JSON, built by the encoding before the size check saw them.
            doubled: list[object] = ["x"]
            for _ in range(40):
                doubled = [doubled, doubled]
            with pytest.raises(InvalidEvent, match="more than 1,048,576 values once written"):
                await a.files.save(data, path="p", metadata={"dag": doubled})
        assert a.files.list() == [] and a.files.blobs.hashes() == []
        assert a.pending_events() == []
        # A value held twice (no cycle) is fine: it is checked once, sent twice.
        shared = {"k": [1, 2]}
        fid = await a.files.save(b"x", path="p", metadata={"one": shared, "two": shared})
        assert a.files.get(fid).metadata == {"one": shared, "two": shared}  # type: ignore[union-attr]


async def test_a_closed_clients_files_api_in_a_cancelled_scope_is_cancelled(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: files.read() / wait_idle() / wait_for() on a closed client, inside a scope
    # already cancelled (a task of the application's nursery, torn down with the
    # client). read() raised ClientClosed before its first checkpoint; a Trio function
    # raises Cancelled there, and the scope catches it.
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a:
        fid = await a.files.save(b"x", path="x")
    calls = [
        lambda: a.files.read(fid),
        a.files.wait_idle,
        lambda: a.files.wait_for(lambda files: False),
        lambda: a.files.update(fid, b"y"),
        lambda: a.files.delete(fid),
        lambda: a.files.save(b"z", path="z"),
    ]
    for call in calls:
        with trio.CancelScope() as scope:
            scope.cancel()
            await call()
        assert scope.cancelled_caught
    with pytest.raises(ClientClosed):
        await a.files.read(fid)  # not cancelled: the client is closed
    with pytest.raises(ClientClosed):
        await a.files.save(b"late" * 1000, path="late")
    # Refused before its contents were copied (a review saw 150 MB copied for nothing).
    assert not a.files.blobs.has(hashlib.sha256(b"late" * 1000).hexdigest())


async def test_a_read_waiting_for_contents_asks_again_with_priority_when_they_change(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # Tried: B reads a file whose contents are not on the server yet (A's uploads are
    # paused); meanwhile A updates it. Before, the read asked once, for the first
    # contents: the download of the new ones was queued by the fold without the read's
    # priority (behind every other download), and their failure for good was raised
    # without the one retry a read asks for.
    await world.start_server(blobs=MemoryBlobBackend())
    async with world.client("A") as a, world.client("B") as b, trio.open_nursery() as nursery:
        a.files.executor.pause()

        def download_asked_with_priority(contents: bytes) -> bool:
            row = b.files.state(fid).download
            waiting = b.files.executor.describe()["download"]["waiting"]  # type: ignore[index]
            return (
                row is not None
                and row.content_hash == hashlib.sha256(contents).hexdigest()
                and any(item["key"] == fid and item["priority"] for item in waiting)
            )

        with trio.fail_after(30):
            # (Not wait_synced(): A is not synced while its uploads wait.)
            fid = await a.files.save(b"first", path="f")
            await b.files.wait_for(lambda files: bool(files.list()))
            nursery.start_soon(b.files.read, fid)
            await b.files.wait_for(lambda _: download_asked_with_priority(b"first"))
            await a.files.update(fid, b"second")
            await b.files.wait_for(lambda _: download_asked_with_priority(b"second"))
        nursery.cancel_scope.cancel()
