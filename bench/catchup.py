"""Catch-up: a fresh client pulls a long log, against a raw SQLite insert of the same rows.

``python bench/catchup.py [--quick | --large] [--events N] [--rounds R]``

The server (``trio-sync serve``, its own process) holds 100,000 events (1,000,000 with
``--large``), appended beforehand in pushes of 1,000 over the wire. Measured: a fresh
client, from ``open_client`` until its store holds them all. Against it, in the same run,
the floor under any pull: the same rows inserted into SQLite straight from their JSON
wire form (json decode, json encode of the args, insert; one durable transaction per
page of 500, WAL, synchronous=FULL).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import trio
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_rate,
    fmt_ratio,
    interleave,
    median,
    plot_lines,
    positive_int,
    progress,
    run_script,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    write_json,
)
from _contenders import versions
from _wire import EVENT_NAME, prefill

import trio_sync

RAW = "raw sqlite insert"
#: The server's pull page size, and so the raw insert's transaction size.
PAGE = 500
#: How often the fresh client's progress is sampled for the plot (seconds).
SAMPLE_EVERY = 0.05


def event_args(i: int) -> dict[str, Any]:
    """A small, typical event body."""
    return {"id": i, "text": f"todo number {i}", "done": i % 3 == 0}


async def pull_everything(url: str, folder: Path, total: int) -> tuple[float, list[Any]]:
    """Seconds for a fresh client to hold ``total`` events, and its progress over time."""
    timeline: list[tuple[float, int]] = []
    started = time.perf_counter()
    async with (
        trio_sync.open_client(url, str(folder / "fresh.sqlite3")) as client,
        trio.open_nursery() as nursery,
    ):

        async def sample() -> None:
            while True:
                timeline.append((time.perf_counter() - started, client.status.upstream_head))
                await trio.sleep(SAMPLE_EVERY)

        nursery.start_soon(sample)
        await client.wait_status(lambda status: status.upstream_head >= total)
        elapsed = time.perf_counter() - started
        timeline.append((elapsed, client.status.upstream_head))
        nursery.cancel_scope.cancel()
    return elapsed, timeline


def wire_rows(total: int) -> list[str]:
    """Each event as the JSON it travels in (what the raw insert starts from)."""
    return [
        json.dumps(
            {
                "name": EVENT_NAME,
                "args": event_args(i),
                "client_id": "prefill",
                "client_seq": i + 1,
                "seq": i + 1,
            },
            separators=(",", ":"),
        )
        for i in range(total)
    ]


def raw_insert(folder: Path, frames: list[str]) -> float:
    """Seconds to decode, re-encode and durably insert every row, a page per transaction."""
    conn = sqlite3.connect(folder / "raw.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE confirmed (seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
            "client_seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL)"
        )
        started = time.perf_counter()
        for first in range(0, len(frames), PAGE):
            rows = []
            for frame in frames[first : first + PAGE]:
                event = json.loads(frame)
                args = json.dumps(event["args"], separators=(",", ":"), ensure_ascii=False)
                rows.append(
                    (event["seq"], event["client_id"], event["client_seq"], event["name"], args)
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO confirmed VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="1,000,000 events")
    parser.add_argument("--events", type=positive_int, help="events in the log (default 100,000)")
    args = parser.parse_args()
    total = args.events or (2_000 if args.quick else 1_000_000 if args.large else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"catchup on {describe_machine()}", flush=True)

    with (
        temp_dir("catchup") as folder,
        spawn_server(trio_sync_server_command(folder / "server.sqlite3")) as server,
    ):
        started = time.perf_counter()
        head = await prefill(server.url, total, event_args)
        progress(f"prefilled {head:,} events in {time.perf_counter() - started:.1f} s")
        frames = wire_rows(total)
        timelines: list[Any] = []

        async def measure(name: str, round_index: int) -> float:
            with temp_dir("catchup_round") as round_folder:
                if name == RAW:
                    seconds = raw_insert(round_folder, frames)
                else:
                    seconds, timeline = await pull_everything(server.url, round_folder, total)
                    timelines.append(timeline)
            progress(f"round {round_index + 1} {name}: {total / seconds:,.0f} events/s")
            return total / seconds

        results = await interleave(rounds, ["trio_sync", RAW], measure)

    ours, raw = median(results["trio_sync"]), median(results[RAW])
    table = Table(
        f"catch-up: a fresh client pulls {total:,} events until it holds them all "
        f"(events/s, median of {rounds} interleaved round(s))",
        ["contender", "events/s", "seconds", "trio_sync / raw"],
    )
    table.add("trio_sync", fmt_rate(ours), f"{total / ours:.2f}", "1.00x")
    table.add(RAW, fmt_rate(raw), f"{total / raw:.2f}", fmt_ratio(ours, raw))
    table.notes.append(
        f"raw: json decode + encode per event, {PAGE} rows per durable transaction "
        "(WAL, synchronous=FULL), the client store's table."
    )
    table.print()
    write_json(
        args.out_dir,
        "catchup",
        {
            "events": total,
            "rounds": rounds,
            "versions": versions(),
            "events_per_s": results,
            "median": {"trio_sync": ours, RAW: raw},
            "timelines": timelines,
        },
    )
    if not args.no_plot:
        series = {
            f"trio_sync, round {i + 1}": [(t, float(n)) for t, n in timeline]
            for i, timeline in enumerate(timelines)
        }
        series[f"{RAW} (median rate)"] = [(0.0, 0.0), (total / raw, float(total))]
        plot_lines(
            Path(args.out_dir) / "catchup.png",
            series,
            xlabel="seconds since open_client",
            ylabel="events held by the fresh client",
            title=f"catch-up of {total:,} events (flat stretches are stalls)",
        )


if __name__ == "__main__":
    run_script(main)
