"""Many small files: files/s from ``save()`` until the server holds them, and until the
other client does, against the limit of storing them durably on this disk.

A saves N files of 1 KiB from 8 tasks at once; B (in its own process, as in
``bench/files.py``) downloads them. The limit, measured in the same run and interleaved:
the same N contents stored the way any durable blob store must (written under a temporary
name, fsynced, renamed, the folder fsynced), one after another in one thread, once. The
engine stores each file three times (A, the server, B) and records its transfer state on
both clients, so it cannot reach the limit; the ratio says how far it is.

    python bench/small_files.py [--quick] [--files 300] [--rounds 3] [--stored 0]

``--stored N`` starts each round's server with N other blobs of 1 KiB already in the
store (as a store in use for a while holds): what uploading costs must not grow with
what the store holds.
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_ratio,
    median,
    non_negative_int,
    positive_int,
    progress,
    run_script,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    write_json,
)
from files import receiver

import trio_sync

FILE_BYTES = 1024
SAVERS = 8


def durable_limit(folder: Path, contents: list[bytes]) -> float:
    """Seconds to store ``contents`` one by one as durable files (the limit)."""
    folder.mkdir()
    fd_dir = os.open(folder, os.O_RDONLY)
    started = time.perf_counter()
    try:
        for index, data in enumerate(contents):
            tmp = folder / f"{index}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, folder / str(index))
            os.fsync(fd_dir)
    finally:
        os.close(fd_dir)
    return time.perf_counter() - started


async def engine_round(url: str, folder: Path, contents: list[bytes]) -> dict[str, float]:
    """Seconds from the first save until the server holds every file (A idle), and until
    B holds every file."""
    async with (
        trio_sync.open_client(url, str(folder / "a.sqlite3"), client_id="A") as a,
        receiver(url, folder, "processes") as (reports, _b_peak),
    ):
        await a.wait_synced()
        ids: list[str] = []
        started = time.perf_counter()

        async def saver(first: int) -> None:
            for index in range(first, len(contents), SAVERS):
                ids.append(await a.files.save(contents[index], path=f"small/{index}"))

        async with trio.open_nursery() as nursery:
            for first in range(SAVERS):
                nursery.start_soon(saver, first)
        saved = time.perf_counter()
        await a.files.wait_idle()
        uploaded = time.perf_counter()
        held = max([await reports.wait("has", file_id) for file_id in ids])
    return {"saved": saved - started, "up": uploaded - started, "down": held - started}


def fill_store(server_db: Path, blobs: int) -> None:
    """Puts ``blobs`` blobs of 1 KiB in the default store of the server at ``server_db``
    (named by random hashes: nothing reads them back)."""
    folder = Path(f"{server_db}.blobs") / "default" / "blobs"
    folder.mkdir(parents=True)
    filler = b"x" * FILE_BYTES
    for _ in range(blobs):
        (folder / os.urandom(32).hex()).write_bytes(filler)


async def run(folder: Path, count: int, rounds: int, stored: int) -> dict[str, Any]:
    engine: list[dict[str, float]] = []
    limit: list[float] = []
    for index in range(rounds):
        where = folder / f"round{index}"
        where.mkdir()
        contents = [os.urandom(FILE_BYTES) for _ in range(count)]
        limit.append(durable_limit(where / "limit", contents))
        fill_store(where / "server.sqlite3", stored)
        with spawn_server(trio_sync_server_command(where / "server.sqlite3")) as server:
            engine.append(await engine_round(server.url, where, contents))
        progress(f"round {index + 1}/{rounds} done")
    return {
        "files": count,
        "file_bytes": FILE_BYTES,
        "stored": stored,
        "engine": engine,
        "limit": limit,
    }


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=positive_int, default=300, help="files per round")
    parser.add_argument(
        "--stored",
        type=non_negative_int,
        default=0,
        help="other blobs the server's store holds already",
    )
    args = parser.parse_args()
    count = 20 if args.quick else args.files
    rounds = args.rounds or (1 if args.quick else 3)
    with temp_dir("small_files") as folder:
        results = trio.run(partial(run, folder, count, rounds, args.stored))
    limit = median([count / seconds for seconds in results["limit"]])
    table = Table(
        f"small files: {count} x {FILE_BYTES} B saved by {SAVERS} tasks, the server's store "
        f"holding {args.stored} other blobs, median of {rounds} round(s) "
        f"({describe_machine()})",
        ["until", "trio_sync seconds", "files/s", "limit files/s", "ratio"],
    )
    for label, key in (
        ("saved (save() returned)", "saved"),
        ("the server holds all", "up"),
        ("B holds all", "down"),
    ):
        seconds = median([round_[key] for round_ in results["engine"]])
        table.add(
            label,
            f"{seconds:.2f}",
            f"{count / seconds:.0f}",
            f"{limit:.0f}",
            fmt_ratio(count / seconds, limit),
        )
    table.notes.append(
        "limit: the same contents stored once as durable files (write, fsync, rename, "
        "folder fsync), one after another, in the same run; the engine stores each three "
        "times (A, server, B) and records transfer state on both clients."
    )
    table.print()
    write_json(args.out_dir, "small_files", results)


if __name__ == "__main__":
    run_script(main)
