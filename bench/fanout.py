"""Fan-out: one writer at 20 events/s, C live readers, against the raw relay.

``python bench/fanout.py [--quick] [--clients 10,100,500] [--rate 20] [--seconds S]
[--workers W] [--full-clients]``

The server runs in its own process (``trio-sync serve``; ``bench/relay.py`` for the
relay), so that its memory can be read: server RSS with the writer alone, then with all
C readers connected; the difference over C is the memory per connection. The readers
are spread over W worker processes, each a Trio loop with many readers, so that they are
not the bottleneck. Delivery latency is measured from the commit call to each reader
seeing the event, on CLOCK_MONOTONIC (``time.monotonic``), which Linux shares between
processes.

By default a trio_sync reader speaks the wire protocol itself (hello, one pull from the
head, then reads pages): to the server it is a client like any other, and it costs far
less than a full client, which stores every event durably. ``--full-clients`` uses real
``open_client`` clients instead (stores on /dev/shm when there is one).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from _common import (
    Table,
    base_parser,
    cpu_seconds,
    describe_machine,
    fmt_ms,
    fmt_ratio,
    interleave,
    latency_summary,
    median,
    number_list,
    pace,
    pipe_receive,
    plot_lines,
    positive_float,
    positive_int,
    progress,
    quiet_when_interrupted,
    raise_fd_limit,
    relay_server_command,
    rounds_latency_summary,
    run_script,
    spawn_server,
    split,
    temp_dir,
    trio_sync_server_command,
    workers,
    write_json,
)
from _contenders import EVENT_NAME, versions
from _wire import open_wire_client, unique_id

import trio_sync
from trio_sync.protocol import Pull

CONTENDERS = ("trio_sync", "relay")
#: Readers connecting at once in one worker (a burst of hundreds of handshakes would
#: measure the accept queue, not the fan-out).
CONNECT_AT_ONCE = 32
#: Seconds the readers get, after the last event is written, to receive everything.
DELIVERY_TIMEOUT = 60.0
#: Full clients' stores go to memory when possible: their fsyncs are not what is measured.
SHM: str | None = "/dev/shm" if Path("/dev/shm").is_dir() else None

Record = Callable[[dict[str, Any]], None]


# --- readers (in the worker processes) -----------------------------------------------


async def wire_reader(url: str, folder: str, record: Record, ready: Callable[[], None]) -> None:
    async with open_wire_client(url, unique_id("reader")) as client:
        await client.send(Pull(pull_id=1, cursor=client.welcome.head))
        ready()
        while True:
            # Plain JSON, like the relay's readers: the reader's own cost stays small.
            body = json.loads(await client.ws.get_message())
            if body.get("type") == "pull_page":
                for event in body["events"]:
                    record(event["args"])


async def full_reader(url: str, folder: str, record: Record, ready: Callable[[], None]) -> None:
    async with trio_sync.open_client(url, str(Path(folder) / f"{unique_id('r')}.sqlite3")) as c:
        await c.wait_synced()
        ready()
        async for event in c.confirmed_stream():
            record(event.args)


async def relay_reader(url: str, folder: str, record: Record, ready: Callable[[], None]) -> None:
    async with trio_websocket.open_websocket_url(url) as ws:
        ready()
        while True:
            record(json.loads(await ws.get_message())["args"])


READERS = {"trio_sync": wire_reader, "trio_sync_full": full_reader, "relay": relay_reader}


def reader_worker(conn: Connection, url: str, kind: str, count: int, folder: str) -> None:
    """A worker process: ``count`` readers of one kind in one Trio loop."""
    raise_fd_limit()
    quiet_when_interrupted(trio.run, _run_readers, conn, url, kind, count, folder)


async def _run_readers(conn: Connection, url: str, kind: str, count: int, folder: str) -> None:
    reader = READERS[kind]
    latencies: list[float] = []
    seen = [0] * count
    connected = 0
    all_connected = trio.Event()
    limiter = trio.CapacityLimiter(CONNECT_AT_ONCE)
    # Set once every reader has seen ``expected`` events (known when the parent asks).
    expected = math.inf
    all_delivered = trio.Event()

    def check_delivered() -> None:
        if min(seen) >= expected:
            all_delivered.set()

    def recorder(index: int) -> Record:
        def record(args: dict[str, Any]) -> None:
            if "t" in args:
                latencies.append(time.monotonic() - args["t"])
                seen[index] += 1
                if seen[index] == expected:
                    check_delivered()

        return record

    async def run_one(index: int) -> None:
        nonlocal connected
        released = False

        def ready() -> None:
            nonlocal connected, released
            connected += 1
            released = True
            limiter.release_on_behalf_of(index)
            if connected == count:
                all_connected.set()

        await limiter.acquire_on_behalf_of(index)
        try:
            await reader(url, folder, recorder(index), ready)
        finally:
            if not released:
                limiter.release_on_behalf_of(index)

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(run_one, index)
        await all_connected.wait()
        conn.send(("ready", count))
        cpu_at_start = time.process_time()
        request = await pipe_receive(conn)
        if request is None:  # "stop": the benchmark ends before this round did
            nursery.cancel_scope.cancel()
            return
        expected = request[1]
        check_delivered()
        with trio.move_on_after(DELIVERY_TIMEOUT):
            await all_delivered.wait()
        short = sum(max(0, request[1] - s) for s in seen)
        cpu = time.process_time() - cpu_at_start
        conn.send({"latencies": latencies, "short": short, "cpu_seconds": cpu})
        nursery.cancel_scope.cancel()


# --- the writer (in this process) ----------------------------------------------------


async def write_trio_sync(url: str, folder: Path, rate: float, count: int) -> Any:
    async with trio_sync.open_client(url, str(folder / "writer.sqlite3")) as writer:
        await writer.wait_synced()

        async def commit(i: int) -> None:
            await writer.commit(EVENT_NAME, {"k": i, "t": time.monotonic()})

        yield_rate = await pace(rate, count, commit)
        await writer.wait_synced()
    return yield_rate


async def write_relay(url: str, folder: Path, rate: float, count: int) -> Any:
    async with trio_websocket.open_websocket_url(url) as ws:

        async def send(i: int) -> None:
            args = {"k": i, "t": time.monotonic()}
            await ws.send_message(json.dumps({"name": EVENT_NAME, "args": args}))

        return await pace(rate, count, send)


# --- one measurement -----------------------------------------------------------------


async def warm_up(name: str, url: str) -> None:
    """One connection in and out before the server's memory is read, so that what is
    allocated once (worker threads, caches, code paths) is not charged to the readers."""
    if name == "trio_sync":
        async with open_wire_client(url, unique_id("warm-up")) as client:
            await client.send(Pull(pull_id=1, cursor=0))
    else:
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"name": EVENT_NAME, "args": {}}))


async def fan_out(name: str, clients: int, options: Any) -> dict[str, Any]:
    """One round: a fresh server, ``clients`` readers, the writer at ``options.rate``."""
    count = max(5, round(options.rate * options.seconds))
    kind = "trio_sync_full" if name == "trio_sync" and options.full_clients else name
    shm = SHM if kind == "trio_sync_full" else None
    with temp_dir("fanout") as folder, temp_dir("fanout_readers", shm) as reader_folder:
        command = (
            trio_sync_server_command(folder / "server.sqlite3")
            if name == "trio_sync"
            else relay_server_command()
        )
        with spawn_server(command) as server:
            await warm_up(name, server.url)
            rss_empty = server.rss()
            shares = [n for n in split(clients, min(options.workers, clients)) if n]
            args = [(server.url, kind, n, str(reader_folder)) for n in shares]
            with workers(reader_worker, args) as started:
                with trio.fail_after(300):
                    for worker in started:
                        await worker.receive()
                rss_connected = server.rss()
                write = write_trio_sync if name == "trio_sync" else write_relay
                server_cpu, started_at = cpu_seconds(server.pid), time.monotonic()
                reached = await write(server.url, folder, options.rate, count)
                server_cpu = cpu_seconds(server.pid) - server_cpu
                rss_after = server.rss()
                with trio.fail_after(DELIVERY_TIMEOUT + 60):
                    answers = [await worker.ask(("collect", count)) for worker in started]
                wall = time.monotonic() - started_at
    latencies = [x for answer in answers for x in answer["latencies"]]
    return {
        "reached": reached,
        "latencies": latencies,
        "short": sum(answer["short"] for answer in answers),
        "expected": count * clients,
        "rss_empty": rss_empty,
        "rss_connected": rss_connected,
        "rss_after": rss_after,
        "bytes_per_connection": (rss_connected - rss_empty) / clients,
        # Shares of one core while writing: is the server, or are the readers, saturated?
        "server_cpu": server_cpu / wall,
        "readers_cpu": sum(answer["cpu_seconds"] for answer in answers) / wall,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **rounds_latency_summary([run["latencies"] for run in runs]),
        "reached": median([run["reached"] for run in runs]),
        "short": sum(run["short"] for run in runs),
        "expected": sum(run["expected"] for run in runs),
        "rss_connected_mib": median([run["rss_connected"] / 2**20 for run in runs]),
        "kib_per_connection": median([run["bytes_per_connection"] / 1024 for run in runs]),
        "server_cpu": median([run["server_cpu"] for run in runs]),
        "readers_cpu": median([run["readers_cpu"] for run in runs]),
    }


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--clients", type=number_list(), help="comma-separated reader counts (default 10,100,500)"
    )
    parser.add_argument("--rate", type=positive_float, default=20.0, help="writer's events/s")
    parser.add_argument("--seconds", type=positive_float, help="seconds of writing per round")
    parser.add_argument("--workers", type=positive_int, default=4, help="reader processes")
    parser.add_argument(
        "--full-clients", action="store_true", help="trio_sync readers are open_client clients"
    )
    options = parser.parse_args()
    counts = options.clients or ([2, 4] if options.quick else [10, 100, 500])
    options.seconds = options.seconds or (0.5 if options.quick else 8.0)
    if options.quick:
        options.workers = min(options.workers, 2)
    rounds = options.rounds or (1 if options.quick else 3)
    print(f"fanout on {describe_machine()}", flush=True)

    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for clients in counts:

        async def measure(name: str, round_index: int, clients: int = clients) -> Any:
            result = await fan_out(name, clients, options)
            summary = latency_summary(result["latencies"])
            progress(
                f"round {round_index + 1} C={clients} {name}: p50 {fmt_ms(summary['p50_ms'])} "
                f"p99 {fmt_ms(summary['p99_ms'])} ms, "
                f"{result['bytes_per_connection'] / 1024:.0f} KiB/connection, "
                f"short {result['short']}"
            )
            return result

        runs[clients] = await interleave(rounds, CONTENDERS, measure)

    summaries = {
        c: {name: summarize(r) for name, r in by_name.items()} for c, by_name in runs.items()
    }
    reader_kind = "open_client clients" if options.full_clients else "wire-protocol readers"
    table = Table(
        f"fan-out: one writer at {options.rate:g} events/s for {options.seconds:g} s, C readers "
        f"({reader_kind}) in {options.workers} processes, {rounds} interleaved round(s)",
        [
            "C",
            "trio_sync p50 ms",
            "p99 ms",
            "relay p50 ms",
            "p99 ms",
            "p99 ratio",
            "trio_sync KiB/conn",
            "relay KiB/conn",
            "trio_sync RSS MiB",
            "relay RSS MiB",
            "trio_sync CPU",
            "relay CPU",
            "readers CPU",
            "undelivered",
        ],
    )
    for clients, by_name in summaries.items():
        ours, relay = by_name["trio_sync"], by_name["relay"]
        table.add(
            str(clients),
            fmt_ms(ours["p50_ms"]),
            fmt_ms(ours["p99_ms"]),
            fmt_ms(relay["p50_ms"]),
            fmt_ms(relay["p99_ms"]),
            fmt_ratio(ours["p99_ms"], relay["p99_ms"]),
            f"{ours['kib_per_connection']:.1f}",
            f"{relay['kib_per_connection']:.1f}",
            f"{ours['rss_connected_mib']:.1f}",
            f"{relay['rss_connected_mib']:.1f}",
            f"{ours['server_cpu']:.0%}",
            f"{relay['server_cpu']:.0%}",
            f"{ours['readers_cpu']:.0%}/{relay['readers_cpu']:.0%}",
            f"{ours['short']}/{relay['short']}",
        )
    table.notes += [
        "latency: commit call (relay: send) until a reader sees the event, every reader; "
        "p50, p99: median over rounds of each round's own.",
        "KiB/conn: (server RSS with C readers - RSS with none) / C; RSS: with C readers.",
        "CPU: server process (readers: all worker processes, trio_sync/relay) while writing, "
        "in cores (100% = one core busy).",
        "undelivered: events a reader never saw within "
        f"{DELIVERY_TIMEOUT:g} s (trio_sync/relay); p99 ratio = trio_sync / relay.",
    ]
    table.print()
    write_json(
        options.out_dir,
        "fanout",
        {
            "rate": options.rate,
            "seconds": options.seconds,
            "workers": options.workers,
            "reader_kind": reader_kind,
            "rounds": rounds,
            "versions": versions(),
            "summary": summaries,
        },
    )
    if not options.no_plot:
        plot_lines(
            Path(options.out_dir) / "fanout.png",
            {
                f"{name} {q}": [(float(c), summaries[c][name][f"{q}_ms"]) for c in counts]
                for name in CONTENDERS
                for q in ("p50", "p99")
            },
            xlabel="live readers (C)",
            ylabel="delivery latency, ms",
            title=f"fan-out latency at {options.rate:g} events/s against readers",
            logx=True,
            logy=True,
            styles={
                f"{name} {q}": {"color": color, "linestyle": "-" if q == "p99" else "--"}
                for name, color in zip(CONTENDERS, ("tab:blue", "tab:orange"), strict=True)
                for q in ("p50", "p99")
            },
        )


if __name__ == "__main__":
    run_script(main)
