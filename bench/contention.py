"""Contention: K clients committing at full speed at once, against the raw relay.

``python bench/contention.py [--quick] [--clients 2,4,8] [--events N] [--rounds R]``

Each of K clients commits N events, one at a time, all starting together. Measured per
client: its drain time, from the start until the server has acknowledged all its events
(``status.pending == 0``). Reported: total events/s (K x N / the slowest drain), the
fastest and slowest drain, and their ratio (a client that starves shows up as a ratio far
above 1), and the time until every client holds all K x N events. The relay does the
same work without storage: a client is drained when every other client has its
messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_rate,
    fmt_ratio,
    interleave,
    median,
    number_list,
    plot_lines,
    positive_int,
    progress,
    run_script,
    temp_dir,
    write_json,
)
from _contenders import EVENT_NAME, versions
from relay import serve_relay

import trio_sync

CONTENDERS = ("trio_sync", "relay")


def run_result(drains: Sequence[float], converged: float, total: int) -> dict[str, Any]:
    return {
        "events_per_s": total / max(drains),
        "drain_min_s": min(drains),
        "drain_max_s": max(drains),
        "starvation": max(drains) / min(drains),
        "converged_s": converged,
    }


async def trio_sync_round(folder: Path, clients: int, events: int) -> dict[str, Any]:
    total = clients * events
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_sync.serve, str(folder / "server.sqlite3"))
        async with AsyncExitStack() as stack:
            connected = [
                await stack.enter_async_context(
                    trio_sync.open_client(server.url, str(folder / f"client{k}.sqlite3"))
                )
                for k in range(clients)
            ]
            for client in connected:
                await client.wait_synced()
            drains: list[float] = []
            held: list[float] = []
            go = trio.Event()

            async def commit_and_drain(client: trio_sync.Client) -> None:
                await go.wait()
                started = time.perf_counter()
                for i in range(events):
                    await client.commit(EVENT_NAME, {"i": i})
                await client.wait_status(lambda status: status.pending == 0)
                drains.append(time.perf_counter() - started)
                await client.wait_status(lambda status: status.upstream_head >= total)
                held.append(time.perf_counter() - started)

            async with trio.open_nursery() as workers:
                for client in connected:
                    workers.start_soon(commit_and_drain, client)
                go.set()
        nursery.cancel_scope.cancel()
    return run_result(drains, max(held), total)


async def relay_round(folder: Path, clients: int, events: int) -> dict[str, Any]:
    total = clients * events
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_relay)
        async with AsyncExitStack() as stack:
            sockets = [
                await stack.enter_async_context(trio_websocket.open_websocket_url(url))
                for _ in range(clients)
            ]
            # received[reader][writer]: how many of writer's messages reader has.
            received = [[0] * clients for _ in range(clients)]
            delivered: dict[int, trio.Event] = {k: trio.Event() for k in range(clients)}
            held: list[float] = []
            drains: list[float | None] = [None] * clients
            go = trio.Event()
            started = 0.0

            def note(reader: int, writer: int) -> None:
                received[reader][writer] += 1
                if all(received[r][writer] == events for r in range(clients) if r != writer):
                    drains[writer] = time.perf_counter() - started
                    delivered[writer].set()

            async def read(reader: int, ws: trio_websocket.WebSocketConnection) -> None:
                while sum(received[reader]) < total - events:
                    body = json.loads(await ws.get_message())
                    if "from" in body:  # not a late hello from _relay_ready
                        note(reader, body["from"])
                held.append(time.perf_counter() - started)

            async def write(writer: int, ws: trio_websocket.WebSocketConnection) -> None:
                await go.wait()
                for i in range(events):
                    await ws.send_message(
                        json.dumps({"name": EVENT_NAME, "args": {"i": i}, "from": writer})
                    )
                await delivered[writer].wait()

            async with trio.open_nursery() as workers:
                for k, ws in enumerate(sockets):
                    workers.start_soon(read, k, ws)
                    workers.start_soon(write, k, ws)
                started = time.perf_counter()
                go.set()
        nursery.cancel_scope.cancel()
    return run_result([d for d in drains if d is not None], max(held), total)


ROUNDS: dict[str, Callable[[Path, int, int], Any]] = {
    "trio_sync": trio_sync_round,
    "relay": relay_round,
}


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--clients",
        type=number_list(minimum=2),  # one client has nobody to contend with
        help="comma-separated client counts (default 2,4,8)",
    )
    parser.add_argument("--events", type=positive_int, help="events per client (default 500)")
    args = parser.parse_args()
    counts = args.clients or ([2, 3] if args.quick else [2, 4, 8])
    events = args.events or (30 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"contention on {describe_machine()}", flush=True)

    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for clients in counts:

        async def measure(name: str, round_index: int, clients: int = clients) -> Any:
            with temp_dir("contention") as folder:
                result = await ROUNDS[name](folder, clients, events)
            progress(
                f"round {round_index + 1} K={clients} {name}: "
                f"{fmt_rate(result['events_per_s'])} events/s, drain max/min "
                f"{result['starvation']:.2f}"
            )
            return result

        results[clients] = await interleave(rounds, CONTENDERS, measure)

    table = Table(
        f"contention: K clients commit {events} events each at once "
        f"(median of {rounds} interleaved round(s); ratio = trio_sync / relay)",
        [
            "K",
            "trio_sync ev/s",
            "relay ev/s",
            "ratio",
            "drain min s",
            "drain max s",
            "max/min",
            "relay max/min",
            "all hold all s",
        ],
    )
    medians: dict[int, dict[str, dict[str, float]]] = {}
    for clients, by_name in results.items():
        medians[clients] = {
            name: {key: median([run[key] for run in runs]) for key in runs[0]}
            for name, runs in by_name.items()
        }
        ours, relay = medians[clients]["trio_sync"], medians[clients]["relay"]
        table.add(
            str(clients),
            fmt_rate(ours["events_per_s"]),
            fmt_rate(relay["events_per_s"]),
            fmt_ratio(ours["events_per_s"], relay["events_per_s"]),
            f"{ours['drain_min_s']:.2f}",
            f"{ours['drain_max_s']:.2f}",
            f"{ours['starvation']:.2f}",
            f"{relay['starvation']:.2f}",
            f"{ours['converged_s']:.2f}",
        )
    table.notes += [
        "drain: start until the server acknowledged all of a client's events (pending 0).",
        "max/min: slowest drain / fastest drain; near 1 means no client starves.",
    ]
    table.print()
    write_json(
        args.out_dir,
        "contention",
        {
            "events_per_client": events,
            "rounds": rounds,
            "versions": versions(),
            "runs": results,
            "median": medians,
        },
    )
    if not args.no_plot:
        plot_lines(
            Path(args.out_dir) / "contention.png",
            {
                name: [(float(k), medians[k][name]["events_per_s"]) for k in counts]
                for name in CONTENDERS
            },
            xlabel="clients committing at once (K)",
            ylabel="total events/s",
            title="contention: total throughput against concurrent writers",
            logy=True,
        )


if __name__ == "__main__":
    run_script(main)
