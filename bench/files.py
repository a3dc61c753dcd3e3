"""File transfer speed, memory and event latency (issue 10).

Upload and download MB/s of ``client.files`` against a server process over loopback,
compared with the limit: a plain copy of the same bytes, in the same chunk size, as
binary frames over one trio-websocket connection to a process that only counts them.
Goals: at least 0.5x the plain copy; peak RSS of client and server bounded by chunk size
times concurrency (the file is never held whole); event latency (commit on one client to
arrival on another) no worse while a large file moves than while idle.

    python bench/files.py [--quick] [--size-mb 50]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import trio
import trio_websocket
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_ms,
    fmt_ratio,
    latency_summary,
    progress,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    write_json,
)

import trio_sync

CHUNK = 256 * 1024

_SINK = """
import sys, trio, trio_websocket
async def handler(request):
    ws = await request.accept()
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
        total += len(message)
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


async def engine_copy(url: str, folder: Path, source: Path) -> dict[str, object]:
    """Upload on A, download on B; event latency A -> B while idle and while moving."""
    latencies: dict[str, list[float]] = {"idle": [], "moving": []}
    async with (
        trio_sync.open_client(url, str(folder / "a.sqlite3"), client_id="A") as a,
        trio_sync.open_client(url, str(folder / "b.sqlite3"), client_id="B") as b,
    ):
        await a.wait_synced()
        await b.wait_synced()
        sent: dict[int, float] = {}

        async def watch() -> None:
            async for event in b.confirmed_stream():
                if event.name == "bench.ping":
                    bucket = "moving" if moving else "idle"
                    key = event.args["n"]
                    assert isinstance(key, int)
                    latencies[bucket].append(time.perf_counter() - sent[key])

        async def ping(count: int) -> None:
            for _ in range(count):
                n = len(sent)
                sent[n] = time.perf_counter()
                await a.commit("bench.ping", {"n": n})
                await trio.sleep(0.02)

        moving = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await ping(20)
            moving = True
            started = time.perf_counter()
            fid = await a.files.save(source, path="big.bin")
            nursery.start_soon(ping, 10_000)
            await a.files.wait_idle()
            up = time.perf_counter() - started
            await b.files.wait_for(lambda files: files.get(fid) is not None)
            started = time.perf_counter()
            await b.files.wait_for(lambda files: files.has_contents(fid))
            down = time.perf_counter() - started
            moving = False
            nursery.cancel_scope.cancel()
    return {"up": up, "down": down, "latency": latencies}


async def run(size: int, folder: Path) -> dict[str, object]:
    source = folder / "source.bin"
    with open(source, "wb") as out:  # noqa: ASYNC230 (before any task runs)
        for offset in range(0, size, 1024 * 1024):
            out.write(os.urandom(min(1024 * 1024, size - offset)))
    sink = subprocess.Popen(  # noqa: ASYNC220 (started before any transfer)
        [sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        plain_up, plain_down = await plain_copy(sink.stdout.readline().strip(), source, size)
    finally:
        sink.terminate()
        sink.wait()
    progress("plain copy done")
    with spawn_server(trio_sync_server_command(folder / "server.sqlite3")) as server:
        rss_before = peak_rss("self")
        engine = await engine_copy(server.url, folder, source)
        server_peak = peak_rss(server.pid)
    return {
        "size": size,
        "plain": {"up": plain_up, "down": plain_down},
        "engine": engine,
        "client_peak_rss": peak_rss("self"),
        "client_rss_before": rss_before,
        "server_peak_rss": server_peak,
    }


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=50.0)
    args = parser.parse_args()
    size = int((2 if args.quick else args.size_mb) * 1024 * 1024)
    with temp_dir("files") as folder:
        results = trio.run(run, size, folder)
    mb = size / 1e6
    plain, engine = results["plain"], results["engine"]
    assert isinstance(plain, dict) and isinstance(engine, dict)
    table = Table(
        f"files: {mb:.0f} MB over loopback ({describe_machine()})",
        ["direction", "trio_sync MB/s", "plain copy MB/s", "ratio", "goal"],
    )
    for direction in ("up", "down"):
        label = "upload" if direction == "up" else "download"
        table.add(
            label,
            f"{mb / engine[direction]:.1f}",
            f"{mb / plain[direction]:.1f}",
            fmt_ratio(plain[direction], engine[direction]),
            ">= 0.50x",
        )
    table.print()
    memory = Table("files memory: peak RSS (MB)", ["process", "peak RSS", "file size"])
    memory.add("trio_sync client", f"{results['client_peak_rss'] / 1e6:.0f}", f"{mb:.0f}")
    memory.add("trio_sync server", f"{results['server_peak_rss'] / 1e6:.0f}", f"{mb:.0f}")
    memory.notes.append(
        f"client before the transfer: {results['client_rss_before'] / 1e6:.0f} MB; "
        f"chunk {CHUNK // 1024} KiB x 2 workers per direction"
    )
    memory.print()
    lat = engine["latency"]
    assert isinstance(lat, dict)
    events = Table("files latency: event A -> B (ms)", ["while", "events", "p50", "p99"])
    for bucket in ("idle", "moving"):
        summary = latency_summary(lat[bucket])
        events.add(
            bucket, str(len(lat[bucket])), fmt_ms(summary["p50_ms"]), fmt_ms(summary["p99_ms"])
        )
    events.print()
    write_json(args.out_dir, "files", results)


if __name__ == "__main__":
    main()
