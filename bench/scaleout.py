"""Scale-out: 1, 2 and 4 ``trio-sync serve`` nodes on one PostgreSQL log, against one node
on SQLite, with the same clients.

``python bench/scaleout.py [--quick] [--nodes 1,2,4] [--writers W] [--readers R]
[--seconds S] [--batch B] [--rate EVENTS_PER_S]``

Each configuration gets fresh logs (a new PostgreSQL database, migrated; a new SQLite
file) and its own node processes; the clients are the same for all: W writers commit
batches of B events (``commit_many``) as fast as they can for S seconds (or at --rate
events/s in all: flat out, the latency is mostly queueing; paced, it is the fan-out),
R readers follow the log (``confirmed_stream``). Clients are spread over the nodes
round-robin and connect with the list of every node URL (as behind a load balancer
without stickiness).

events/s: events committed by the writers / seconds from the first commit until every
writer is synced (every event durable in the log). Fan-out latency: from the commit call
to a reader (on any node) seeing the event confirmed, on ``time.monotonic`` (shared by
processes), for every reader and event; p99 of each round, median over rounds.

The PostgreSQL server is a throwaway cluster from the machine's binaries (fsync on, as in
production), on the same machine as the nodes and clients: on 2 cores everything competes
for them, so more nodes cannot mean more throughput here; read the ratios as what the
extra processes and the shared database cost, not as what more machines would give.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    interleave,
    latency_summary,
    median,
    non_negative_float,
    number_list,
    plot_lines,
    positive_float,
    positive_int,
    progress,
    run_script,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    write_json,
)
from _contenders import versions

import trio_sync
from trio_sync.store._pg_schema import migrate
from trio_sync.testing._pg_cluster import PostgresCluster, find_postgres_bin

SQLITE = "sqlite x1"


def contender(nodes: int) -> str:
    return f"postgres x{nodes}"


@contextlib.contextmanager
def nodes(db: str, count: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(spawn_server(trio_sync_server_command(db))).url
               for _ in range(count)]  # fmt: skip


async def run_clients(urls: list[str], folder: Path, options: Any) -> dict[str, Any]:
    latencies: list[float] = []
    committed = 0
    rotate = [urls[i:] + urls[:i] for i in range(len(urls))]
    async with contextlib.AsyncExitStack() as stack:
        readers = [
            await stack.enter_async_context(
                trio_sync.open_client(rotate[i % len(urls)], str(folder / f"r{i}.sqlite3"))
            )
            for i in range(options.readers)
        ]
        writers = [
            await stack.enter_async_context(
                trio_sync.open_client(
                    rotate[(i + options.readers) % len(urls)], str(folder / f"w{i}.sqlite3")
                )
            )
            for i in range(options.writers)
        ]
        for client in [*readers, *writers]:
            with trio.fail_after(30):
                await client.wait_synced()
        total = 0  # known once the writers stop
        done = trio.Event()

        async def follow(client: trio_sync.Client) -> None:
            seen = 0
            async for event in client.confirmed_stream(after=0):
                latencies.append(time.monotonic() - float(event.args["t"]))  # type: ignore[arg-type]
                seen += 1
                if done.is_set() and seen >= total:
                    return

        async def write(client: trio_sync.Client, deadline: float) -> None:
            nonlocal committed
            # With --rate, each writer its share of the rate; else as fast as it can.
            interval = options.writers * options.batch / options.rate if options.rate else 0
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                await trio.sleep_until(trio.current_time() + max(0, next_at - time.monotonic()))
                next_at += interval
                now = time.monotonic()
                await client.commit_many([("bench", {"t": now})] * options.batch)
                committed += options.batch

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for client in readers:
                nursery.start_soon(follow, client)
            async with trio.open_nursery() as writing:
                for client in writers:
                    writing.start_soon(write, client, started + options.seconds)
            total = committed
            done.set()
            with trio.fail_after(120):
                for client in writers:
                    await client.wait_synced()
            elapsed = time.monotonic() - started
            with trio.move_on_after(30):  # the readers see the last events
                for client in readers:
                    await client.wait_status(lambda s: s.upstream_head >= total)
            nursery.cancel_scope.cancel()
    return {"events": committed, "seconds": elapsed, "events_per_s": committed / elapsed,
            **latency_summary(latencies)}  # fmt: skip


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--nodes", type=number_list(), help="comma-separated node counts on PostgreSQL (1,2,4)"
    )
    parser.add_argument("--writers", type=positive_int, default=4, help="writing clients")
    parser.add_argument("--readers", type=positive_int, default=4, help="reading clients")
    parser.add_argument("--seconds", type=positive_float, help="seconds of writing per round")
    parser.add_argument("--batch", type=positive_int, default=10, help="events per commit_many")
    parser.add_argument(
        "--rate",
        type=non_negative_float,
        default=0,
        help="events/s of all writers together (0: flat out)",
    )
    options = parser.parse_args()
    counts = options.nodes or ([1, 2] if options.quick else [1, 2, 4])
    options.seconds = options.seconds or (0.5 if options.quick else 5.0)
    if options.quick:
        options.writers, options.readers = min(options.writers, 2), min(options.readers, 2)
    rounds = options.rounds or (1 if options.quick else 3)
    bindir = find_postgres_bin()
    if bindir is None:
        raise SystemExit("scaleout: PostgreSQL is not installed (no initdb found)")
    print(f"scaleout on {describe_machine()}", flush=True)
    contenders = [SQLITE, *(contender(n) for n in counts)]
    cluster = PostgresCluster(bindir, durable=True)
    try:
        cluster.init()
        cluster.start()

        async def measure(name: str, round_index: int) -> dict[str, Any]:
            with temp_dir("scaleout") as folder:
                if name == SQLITE:
                    db, count = str(folder / "server.sqlite3"), 1
                else:
                    db, count = cluster.create_database(), int(name.rsplit("x", 1)[1])
                    migrate(db)
                with nodes(db, count) as urls:
                    result = await run_clients(urls, folder, options)
            progress(
                f"round {round_index + 1} {name}: {fmt_rate(result['events_per_s'])} events/s, "
                f"fan-out p99 {fmt_ms(result['p99_ms'])} ms"
            )
            return result

        runs = await interleave(rounds, contenders, measure)
    finally:
        cluster.destroy()

    summary = {
        name: {
            "events_per_s": median([r["events_per_s"] for r in results]),
            "p50_ms": median([r["p50_ms"] for r in results]),
            "p99_ms": median([r["p99_ms"] for r in results]),
        }
        for name, results in runs.items()
    }
    base = summary[SQLITE]
    table = Table(
        f"scale-out: trio_sync, {options.writers} writers (batches of {options.batch}, "
        f"{f'{options.rate:g} events/s' if options.rate else 'flat out'}) and "
        f"{options.readers} readers for {options.seconds:g} s, {rounds} interleaved round(s)",
        ["log", "events/s", "vs sqlite", "fan-out p50 ms", "p99 ms", "p99 vs sqlite"],
    )
    for name in contenders:
        ours = summary[name]
        table.add(
            name,
            fmt_rate(ours["events_per_s"]),
            fmt_ratio(ours["events_per_s"], base["events_per_s"]),
            fmt_ms(ours["p50_ms"]),
            fmt_ms(ours["p99_ms"]),
            fmt_ratio(ours["p99_ms"], base["p99_ms"]),
        )
    table.notes += [
        "events/s: committed / seconds until every writer is synced; median over rounds.",
        "fan-out: commit call until a reader on any node sees it confirmed; p50, p99: median "
        "over rounds of each round's own. Ratios are x / sqlite x1.",
        "One machine: the database, every node and every client share its cores.",
    ]
    table.print()
    write_json(
        options.out_dir,
        "scaleout",
        {"options": {k: v for k, v in vars(options).items() if k != "out_dir"},
         "rounds": rounds, "versions": versions(), "summary": summary, "runs": runs},
    )  # fmt: skip
    if not options.no_plot:
        plot_lines(
            Path(options.out_dir) / "scaleout.png",
            {
                "postgres events/s": [
                    (float(n), summary[contender(n)]["events_per_s"]) for n in counts
                ],
                "sqlite x1 events/s": [(float(n), base["events_per_s"]) for n in counts],
            },
            xlabel="server nodes",
            ylabel="events/s",
            title="scale-out throughput (sqlite: one node, drawn flat)",
        )
        plot_lines(
            Path(options.out_dir) / "scaleout_latency.png",
            {
                "postgres p99": [(float(n), summary[contender(n)]["p99_ms"]) for n in counts],
                "sqlite x1 p99": [(float(n), base["p99_ms"]) for n in counts],
            },
            xlabel="server nodes",
            ylabel="fan-out p99, ms",
            title="scale-out fan-out latency",
        )
    if any(math.isnan(s["events_per_s"]) for s in summary.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    run_script(main)
