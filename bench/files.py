"""File transfer speed, memory and event latency (issue 10).

Upload and download MB/s of ``client.files`` against a server process over loopback,
compared with the limit: a plain copy of the same bytes, in the same chunk size, as
binary frames over one trio-websocket connection to a process that only counts them.
Goals: at least 0.5x the plain copy; peak RSS of client and server bounded by chunk size
times concurrency (the file is never held whole); event latency (commit on one client to
arrival on another) no worse while a large file moves than while idle.

Placement (``--placement``): by default client A (saves, uploads, commits a ping every
20 ms) runs here, client B (downloads, receives the pings) and the server each in their
own process, as clients are deployed; ``one-process`` runs A and B both here. Several
rounds, each with a fresh server and a fresh file, interleaved with the plain copy.

    python bench/files.py [--quick] [--size-mb 50] [--rounds 3] [--placement processes]
        [--no-events]

``--no-events`` sends no event while the file moves: transfers yield to events in
flight (docs/files.md), so the bandwidth when no event flows is measured that way. The
latency table splits *moving* into *uploading* (until the server holds the file) and
*downloading* (until B holds it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from _common import (
    Table,
    base_parser,
    describe_machine,
    existing_folder,
    fmt_ms,
    fmt_ratio,
    median,
    positive_float,
    progress,
    rounds_latency_summary,
    run_script,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    write_json,
)

import trio_sync
from trio_sync.files import FileBlobStore
from trio_sync.files._blobs import _write_back  # the engine's way of writing a blob

CHUNK = 256 * 1024  # the server's default chunk (BlobLimits.chunk_bytes)
PING_EVERY = 0.02
#: When an event's latency was measured: before anything moved, while the same bytes
#: moved between two other processes (the control), while the engine moved the file.
LATENCY_BUCKETS = ("idle", "beside a plain copy", "moving", "uploading", "downloading")

_SINK = """
import os, sys, trio, trio_websocket
from trio_sync.files._blobs import _write_back
async def handler(request):
    ws = await request.accept()
    try:
        await serve(ws)
    except trio_websocket.ConnectionClosed:
        pass
async def serve(ws):
    total = 0
    while True:
        message = await ws.get_message()
        if message == "end":
            await ws.send_message(str(total)); return
        if message == "get":
            size = int(await ws.get_message()); block = bytes(CHUNK_SIZE)
            for offset in range(0, size, len(block)):
                await ws.send_message(block[: size - offset])
            continue
        if isinstance(message, str) and message.startswith("put "):
            await store(ws, message[4:]); return
        total += len(message)
async def store(ws, path):
    # A durable copy: written as the engine writes a blob, synced before answering.
    total = 0
    with open(path, "wb") as out:
        while (message := await ws.get_message()) != "end":
            out.write(message); out.flush()
            _write_back(out.fileno(), total, len(message)); total += len(message)
        os.fsync(out.fileno())
    await ws.send_message(str(total))
async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        print(f"ws://127.0.0.1:{server.port}", flush=True)
trio.run(main)
""".replace("CHUNK_SIZE", str(CHUNK))


def peak_rss(pid: int | str) -> int:
    """VmHWM: the most resident memory the process ever had (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def plain_copy(url: str, source: Path, size: int) -> tuple[float, float]:
    """Seconds to send the file's bytes as binary frames, and to receive as many."""
    async with trio_websocket.open_websocket_url(url, message_queue_size=1) as ws:
        started = time.perf_counter()
        with open(source, "rb") as data:  # noqa: ASYNC230 (what the engine does too)
            while block := data.read(CHUNK):
                await ws.send_message(block)
        await ws.send_message("end")
        assert int(await ws.get_message()) == size
        up = time.perf_counter() - started
    async with trio_websocket.open_websocket_url(url, message_queue_size=1) as ws:
        started = time.perf_counter()
        await ws.send_message("get")
        await ws.send_message(str(size))
        received = 0
        while received < size:
            received += len(await ws.get_message())
        down = time.perf_counter() - started
    return up, down


async def durable_copy(url: str, source: Path, folder: Path) -> float:
    """The same bytes moved by the simplest durable means (the control for the event
    latency): sent as binary frames to the sink, which writes and syncs them as the engine
    writes a blob, then fetched back and written the same way here. Returns the seconds."""
    started = time.perf_counter()
    async with trio_websocket.open_websocket_url(url, message_queue_size=1) as ws:
        await ws.send_message(f"put {folder / 'sink.bin'}")
        with open(source, "rb") as data:  # noqa: ASYNC230 (what the engine does too)
            while block := data.read(CHUNK):
                await ws.send_message(block)
        await ws.send_message("end")
        size = int(await ws.get_message())
    async with trio_websocket.open_websocket_url(url, message_queue_size=1) as ws:
        await ws.send_message("get")
        await ws.send_message(str(size))
        with open(folder / "fetched.bin", "wb") as out:  # noqa: ASYNC230
            received = 0
            while received < size:
                block = await ws.get_message()
                out.write(block)
                out.flush()
                _write_back(out.fileno(), received, len(block))
                received += len(block)
            os.fsync(out.fileno())
    return time.perf_counter() - started


def local_save_seconds(source: Path, scratch: Path) -> float:
    """Seconds the local part of ``save()`` takes alone: copying ``source`` into a blob
    store on the same disk, hashing and fsyncing it (then the scratch store goes)."""
    store = FileBlobStore(scratch)
    started = time.perf_counter()
    store.put(source)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


class Reports:
    """What the receiving client B reported, with when (``time.perf_counter()``: Linux's
    CLOCK_MONOTONIC, the same clock in every process)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = trio.Event()

    def add(self, kind: str, key: str, at: float) -> None:
        self.seen[(kind, key)] = at
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, kind: str, key: str) -> float:
        while (kind, key) not in self.seen:
            await self.changed.wait()
        return self.seen[(kind, key)]


async def receive_as_b(b: trio_sync.Client, report: Callable[[str, str, float], None]) -> None:
    """B's side: reports each ping as it arrives, each file as it appears and as its
    contents arrive."""

    async def pings() -> None:
        async for event in b.confirmed_stream():
            if event.name == "bench.ping":
                report("ping", str(event.args["n"]), time.perf_counter())

    async def files() -> None:
        meta: set[str] = set()
        held: set[str] = set()

        def news(sync: trio_sync.files.FileSync) -> bool:
            return any(
                info.id not in meta or (info.id not in held and sync.has_contents(info.id))
                for info in sync.list()
            )

        while True:
            await b.files.wait_for(news)
            now = time.perf_counter()
            for info in b.files.list():
                if info.id not in meta:
                    meta.add(info.id)
                    report("meta", info.id, now)
                if info.id not in held and b.files.has_contents(info.id):
                    held.add(info.id)
                    report("has", info.id, now)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pings)
        nursery.start_soon(files)


async def receiver_main(url: str, folder: str) -> None:
    """The receiving client in its own process (``--receiver``): one line per report."""

    def report(kind: str, key: str, at: float) -> None:
        print(kind, key, repr(at), flush=True)

    async with trio_sync.open_client(url, str(Path(folder) / "b.sqlite3"), client_id="B") as b:
        await b.wait_synced()
        print("ready - 0", flush=True)
        await receive_as_b(b, report)


@asynccontextmanager
async def receiver(
    url: str, folder: Path, placement: str
) -> AsyncIterator[tuple[Reports, Callable[[], int]]]:
    """B, in this process or in its own; yields its reports and a function that reads
    its peak RSS."""
    reports = Reports()
    if placement == "one-process":
        async with (
            trio_sync.open_client(url, str(folder / "b.sqlite3"), client_id="B") as b,
            trio.open_nursery() as nursery,
        ):
            await b.wait_synced()
            nursery.start_soon(receive_as_b, b, reports.add)
            yield reports, lambda: peak_rss("self")
            nursery.cancel_scope.cancel()
        return
    command = [sys.executable, __file__, "--receiver", url, str(folder)]
    proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    stdout = proc.stdout

    async def read() -> None:
        buffer = b""
        while chunk := await stdout.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                kind, key, at = line.decode().split()
                reports.add(kind, key, float(at))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await reports.wait("ready", "-")
            peak = [0]

            def b_peak() -> int:
                peak[0] = max(peak[0], peak_rss(proc.pid))
                return peak[0]

            yield reports, b_peak
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def engine_copy(
    url: str,
    folder: Path,
    source: Path,
    placement: str,
    *,
    events: bool = True,
    sink_url: str | None = None,
) -> dict[str, Any]:
    """A saves and uploads, B downloads; event latency A -> B while idle, beside a
    durable plain copy of the same bytes between two other processes (``sink_url``: the
    sink's; the control: what moving them costs the machine), and while the file moves
    (from A's save until B holds the contents; ``events=False``: no event while it moves,
    for the bandwidth alone)."""
    sent: dict[int, float] = {}
    async with (
        trio_sync.open_client(url, str(folder / "a.sqlite3"), client_id="A") as a,
        receiver(url, folder, placement) as (reports, b_peak),
    ):
        await a.wait_synced()

        async def ping(count: int) -> None:
            for _ in range(count):
                n = len(sent)
                sent[n] = time.perf_counter()
                await a.commit("bench.ping", {"n": n})
                await trio.sleep(PING_EVERY)

        started: list[float] = []
        notes = a.subscribe()

        async def note_start() -> None:
            async for note in notes:  # read to the end: an unread subscription drops
                if note.kind == "upload.start" and not started:
                    started.append(time.perf_counter())

        await ping(20)
        beside_from = beside_until = time.perf_counter()
        copied = None
        if sink_url is not None:
            async with trio.open_nursery() as beside:
                beside.start_soon(ping, 10_000_000)
                command = [sys.executable, __file__, "--copier", sink_url, str(source)]
                done = await trio.run_process([*command, str(folder)], capture_stdout=True)
                copied = float(done.stdout)
                beside_until = time.perf_counter()
                beside.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(note_start)
            moving_from = time.perf_counter()
            fid = await a.files.save(source, path="big.bin")
            if events:
                nursery.start_soon(ping, 10_000_000)
            await a.files.wait_idle()
            uploaded = time.perf_counter()
            held = await reports.wait("has", fid)
            nursery.cancel_scope.cancel()
        await reports.wait("ping", str(len(sent) - 1))  # the last ones still count
        b_rss = b_peak()
    latencies: dict[str, list[float]] = {bucket: [] for bucket in LATENCY_BUCKETS}
    for n, at in sent.items():
        arrived = reports.seen[("ping", str(n))]
        if at < beside_from:
            latencies["idle"].append(arrived - at)
        elif at <= beside_until:
            latencies["beside a plain copy"].append(arrived - at)
        elif moving_from <= at <= held:
            latencies["moving"].append(arrived - at)
            latencies["uploading" if at < uploaded else "downloading"].append(arrived - at)
    return {
        "up": uploaded - moving_from,
        # The transfer alone: from its upload.start notification (after save() copied,
        # hashed and fsynced the file locally), as the plain copy reads a file it holds.
        "transfer": uploaded - started[0],
        # From the moment the server holds the blob (A's upload done) until B does: B
        # asked for it during the upload, and the server answers as the upload ends.
        "down": held - uploaded,
        "latency": latencies,
        "durable_copy": copied,
        "b_peak_rss": b_rss,
    }


async def run(
    size: int, folder: Path, rounds: int, placement: str, *, events: bool = True
) -> dict[str, Any]:
    sink = subprocess.Popen(  # noqa: ASYNC220 (started before any transfer)
        [sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True
    )
    plain: list[dict[str, float]] = []
    engine: list[dict[str, Any]] = []
    server_peak = 0
    try:
        assert sink.stdout is not None
        sink_url = sink.stdout.readline().strip()
        for index in range(rounds):
            where = folder / f"round{index}"
            where.mkdir()
            source = where / "source.bin"
            with open(source, "wb") as out:  # noqa: ASYNC230 (before the round's tasks)
                for offset in range(0, size, 1024 * 1024):
                    out.write(os.urandom(min(1024 * 1024, size - offset)))
            up, down = await plain_copy(sink_url, source, size)
            save = await trio.to_thread.run_sync(local_save_seconds, source, where / "scratch")
            plain.append({"up": up, "down": down, "save": save})
            with spawn_server(trio_sync_server_command(where / "server.sqlite3")) as server:
                engine.append(
                    await engine_copy(
                        server.url, where, source, placement, events=events, sink_url=sink_url
                    )
                )
                server_peak = max(server_peak, peak_rss(server.pid))
            progress(f"round {index + 1}/{rounds} done")
    finally:
        sink.terminate()
        sink.wait()
    return {
        "size": size,
        "placement": placement,
        "events": events,
        "plain": plain,
        "engine": engine,
        "client_peak_rss": peak_rss("self"),
        "b_peak_rss": max(round_["b_peak_rss"] for round_ in engine),
        "server_peak_rss": server_peak,
    }


def main() -> None:
    if sys.argv[1:2] == ["--receiver"]:
        trio.run(receiver_main, sys.argv[2], sys.argv[3])
        return
    if sys.argv[1:2] == ["--copier"]:
        print(trio.run(durable_copy, sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
        return
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=positive_float, default=50.0)
    parser.add_argument(
        "--placement",
        choices=["processes", "one-process"],
        default="processes",
        help="processes: A here, B and the server each in its own process, as clients "
        "are deployed; one-process: A and B both here (the server apart)",
    )
    parser.add_argument(
        "--tmp-dir",
        type=existing_folder,
        help="where the stores and blobs go (default: the system's temporary directory; "
        "/dev/shm takes the disk out of the picture)",
    )
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="no event while the file moves: the bandwidth when no event flows (file "
        "transfers yield to events in flight, see docs/files.md)",
    )
    args = parser.parse_args()
    size = int((2 if args.quick else args.size_mb) * 1024 * 1024)
    rounds = args.rounds or (1 if args.quick else 3)
    with temp_dir("files", args.tmp_dir) as folder:
        results = trio.run(
            partial(run, size, folder, rounds, args.placement, events=not args.no_events)
        )
    mb = size / 1e6
    plain, engine = results["plain"], results["engine"]
    table = Table(
        f"files: {mb:.0f} MB over loopback, {args.placement}, median of {rounds} interleaved "
        f"round(s) ({describe_machine()})",
        ["direction", "trio_sync MB/s", "plain copy MB/s", "ratio", "goal"],
    )
    rows = (("upload", "up", "up"), ("upload, transfer only", "transfer", "up"))
    for label, ours_key, theirs_key in (*rows, ("download", "down", "down")):
        ours = median([mb / round_[ours_key] for round_ in engine])
        theirs = median([mb / round_[theirs_key] for round_ in plain])
        table.add(label, f"{ours:.1f}", f"{theirs:.1f}", fmt_ratio(ours, theirs), ">= 0.50x")
    # What save() must do before any byte can leave (the contents are named by their
    # hash): the upload from save() can be no faster than that plus the plain copy.
    save_alone = median([round_["save"] for round_ in plain])
    up_alone = median([round_["up"] for round_ in plain])
    table.add(
        "upload ceiling: local save alone + plain copy",
        f"{mb / (save_alone + up_alone):.1f}",
        f"{mb / up_alone:.1f}",
        fmt_ratio(up_alone, save_alone + up_alone),
        "",
    )
    table.notes.append(
        "upload: from save() (copy into the local blob store, hash, fsync) until the server "
        "holds it; transfer only: from the upload.start notification until then; download: "
        "from then until B holds it; upload ceiling: the same local save timed alone on the "
        f"same disk ({mb / save_alone:.0f} MB/s), then the plain copy, back to back."
    )
    if args.quick:
        table.notes.append(
            "--quick: a smoke run of a few MB; the ratios are no measurement (fixed costs "
            "dominate): run without --quick to compare against the goals."
        )
    table.print()
    memory = Table("files memory: peak RSS (MB)", ["process", "peak RSS", "file size"])
    a_label = "client A (+ B)" if args.placement == "one-process" else "client A"
    memory.add(a_label, f"{results['client_peak_rss'] / 1e6:.0f}", f"{mb:.0f}")
    if args.placement == "processes":
        memory.add("client B", f"{results['b_peak_rss'] / 1e6:.0f}", f"{mb:.0f}")
    memory.add("trio_sync server", f"{results['server_peak_rss'] / 1e6:.0f}", f"{mb:.0f}")
    memory.notes.append(f"chunk {CHUNK // 1024} KiB x 2 workers per direction")
    memory.print()
    events = Table(
        "files latency: event A -> B (ms; p50, p99: median of the rounds' own)",
        ["while", "events", "p50", "p99", "max", "vs idle p50/p99", "vs copy p50/p99"],
    )
    summaries = {
        bucket: rounds_latency_summary([round_["latency"][bucket] for round_ in engine])
        for bucket in LATENCY_BUCKETS
    }
    idle, copy = summaries["idle"], summaries["beside a plain copy"]

    def ratios(summary: dict[str, float], base: dict[str, float]) -> str:
        return "/".join(fmt_ratio(summary[p], base[p]) for p in ("p50_ms", "p99_ms"))

    for bucket, summary in summaries.items():
        events.add(
            bucket,
            str(summary["n"]),
            fmt_ms(summary["p50_ms"]),
            fmt_ms(summary["p99_ms"]),
            fmt_ms(summary["max_ms"]),
            "" if bucket == "idle" else ratios(summary, idle),
            "" if bucket in ("idle", "beside a plain copy") else ratios(summary, copy),
        )
    copy_mbs = median([mb / round_["durable_copy"] for round_ in engine])
    events.notes.append(
        "beside a plain copy: while two other processes move the same bytes over a "
        f"WebSocket and write them durably at both ends as a blob is written ({copy_mbs:.0f} "
        "MB/s, there and back): what moving them costs this machine's cores and disk."
    )
    events.notes.append(
        "goal: transfers never slow the event sync (moving vs idle); vs copy: how much more "
        f"than the same bytes moved beside it. A ping every {PING_EVERY * 1000:.0f} ms."
    )
    events.print()
    write_json(args.out_dir, "files", results)


if __name__ == "__main__":
    run_script(main)
