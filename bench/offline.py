"""Offline commits: how long a commit takes with no server, against raw SQLite.

``python bench/offline.py [--quick] [--commits N] [--rounds R]``

A trio_sync client whose server is unreachable (nothing listens on its URL) commits, one
call at a time: (a) single events with ``commit()``, (b) batches of 100 with
``commit_many()``. Against it, in the same run and interleaved, the floor under any
durable commit from a Trio program: the same rows inserted by raw SQLite in one durable
transaction per call (WAL, synchronous=FULL), run through ``trio.to_thread.run_sync`` as
an event loop must (an fsync never blocks it). Latency per call: p50 and p99 (median over
rounds of each round's own), and the ratio trio_sync / raw (the goal for batches of 100:
within 2x). Then (c): 16 tasks call ``commit()`` at once (a group commit), events/s and
the process's CPU an event, against raw transactions of 16 rows each, one after another.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import trio
from _common import (
    Table,
    base_parser,
    describe_machine,
    fmt_ms,
    fmt_ratio,
    interleave,
    positive_int,
    progress,
    rounds_latency_summary,
    run_script,
    temp_dir,
    write_json,
)
from _contenders import versions

import trio_sync

RAW = "raw sqlite (thread)"
EVENT_NAME = "bench.event"
#: Nothing listens here: the client stays offline, every commit is local.
OFFLINE_URL = "ws://127.0.0.1:1"
BATCH = 100
#: Tasks committing at once in (c).
TASKS = 16
#: Goal for a batch of 100: trio_sync within this factor of raw SQLite.
BATCH_GOAL = 2.0


def event_args(i: int) -> dict[str, Any]:
    return {"id": i, "text": f"todo number {i}", "done": i % 3 == 0}


async def trio_sync_latencies(folder: Path, calls: int, batch: int) -> list[float]:
    """Seconds per call of ``calls`` commits (``batch`` events each; 1: ``commit()``)."""
    seconds: list[float] = []
    async with trio_sync.open_client(OFFLINE_URL, str(folder / "offline.sqlite3")) as client:
        for call in range(calls):
            started = time.perf_counter()
            if batch == 1:
                await client.commit(EVENT_NAME, event_args(call))
            else:
                await client.commit_many(
                    [(EVENT_NAME, event_args(call * batch + i)) for i in range(batch)]
                )
            seconds.append(time.perf_counter() - started)
    return seconds


async def trio_sync_concurrent(folder: Path, calls: int) -> tuple[float, float]:
    """``TASKS`` tasks make ``calls`` commits each at once: (events/s, CPU seconds an
    event of this process, the kernel's time for the fsyncs included)."""
    async with trio_sync.open_client(OFFLINE_URL, str(folder / "offline.sqlite3")) as client:

        async def commit_each(task: int) -> None:
            for call in range(calls):
                await client.commit(EVENT_NAME, event_args(call * TASKS + task))

        started, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(commit_each, task)
        return _rate_and_cpu(calls * TASKS, started, cpu)


def _rate_and_cpu(events: int, started: float, cpu: float) -> tuple[float, float]:
    """(events/s, CPU seconds an event) since ``time.perf_counter()`` was ``started`` and
    ``time.process_time()`` was ``cpu``."""
    return events / (time.perf_counter() - started), (time.process_time() - cpu) / events


async def raw_latencies(folder: Path, calls: int, batch: int) -> list[float]:
    """The same rows, one durable transaction per call, each in a worker thread."""
    conn = sqlite3.connect(folder / "raw.sqlite3", isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE pending (client_seq INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "args TEXT NOT NULL, committed_at REAL NOT NULL)"
        )

        def write(first: int) -> None:
            rows = [
                (
                    first + i + 1,
                    EVENT_NAME,
                    json.dumps(event_args(first + i), separators=(",", ":")),
                    time.time(),
                )
                for i in range(batch)
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO pending VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")

        seconds: list[float] = []
        for call in range(calls):
            started = time.perf_counter()
            await trio.to_thread.run_sync(write, call * batch)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        conn.close()


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--commits", type=positive_int, help="calls per round and scenario (default 500)"
    )
    args = parser.parse_args()
    calls = args.commits or (20 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"offline on {describe_machine()}", flush=True)

    scenarios = {"(a) commit()": 1, f"(b) commit_many({BATCH})": BATCH}
    per_round: dict[str, dict[str, list[list[float]]]] = {}
    for label, batch in scenarios.items():

        async def measure(
            name: str, round_index: int, batch: int = batch, label: str = label
        ) -> float:
            with temp_dir("offline") as folder:
                if name == RAW:
                    seconds = await raw_latencies(folder, calls, batch)
                else:
                    seconds = await trio_sync_latencies(folder, calls, batch)
            p50 = 1000 * sorted(seconds)[len(seconds) // 2]
            progress(f"{name}, batch {batch}, round {round_index + 1}: p50 {p50:.3f} ms")
            per_round.setdefault(label, {}).setdefault(name, []).append(seconds)
            return 0.0

        await interleave(rounds, ["trio_sync", RAW], measure)

    table = Table(
        f"offline commit: one call at a time, no server, {calls} calls per round "
        f"(latency per call, {rounds} interleaved round(s); ratio = trio_sync / raw)",
        ["scenario", "contender", "p50 ms", "p99 ms", "p50 ratio", "p99 ratio"],
    )
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for label in scenarios:
        ours = rounds_latency_summary(per_round[label]["trio_sync"])
        raw = rounds_latency_summary(per_round[label][RAW])
        summary[label] = {"trio_sync": ours, RAW: raw}
        table.add(
            label, "trio_sync", fmt_ms(ours["p50_ms"]), fmt_ms(ours["p99_ms"]), "1.00x", "1.00x"
        )
        table.add(
            "",
            RAW,
            fmt_ms(raw["p50_ms"]),
            fmt_ms(raw["p99_ms"]),
            fmt_ratio(ours["p50_ms"], raw["p50_ms"]),
            fmt_ratio(ours["p99_ms"], raw["p99_ms"]),
        )
    batch_label = f"(b) commit_many({BATCH})"
    ratio = summary[batch_label]["trio_sync"]["p50_ms"] / summary[batch_label][RAW]["p50_ms"]
    verdict = "met" if ratio <= BATCH_GOAL else "missed"
    table.notes.append(
        f"target (b): a batch of {BATCH} within {BATCH_GOAL:g}x of one raw SQLite transaction "
        f"of {BATCH} rows: {ratio:.2f}x at p50, {verdict}."
    )
    table.notes.append(
        "raw: one durable transaction per call (WAL, synchronous=FULL) through "
        "trio.to_thread.run_sync; trio_sync: commit() / commit_many() of a client whose server "
        "is unreachable."
    )
    table.print()

    async def measure_concurrent(name: str, round_index: int) -> tuple[float, float]:
        with temp_dir("offline") as folder:
            if name == RAW:
                started, cpu = time.perf_counter(), time.process_time()
                await raw_latencies(folder, calls, TASKS)
                result = _rate_and_cpu(calls * TASKS, started, cpu)
            else:
                result = await trio_sync_concurrent(folder, calls)
        progress(f"{name}, {TASKS} tasks, round {round_index + 1}: {result[0]:,.0f} events/s")
        return result

    concurrent = await interleave(rounds, ["trio_sync", RAW], measure_concurrent)
    rates = {name: statistics.median(r for r, _ in runs) for name, runs in concurrent.items()}
    cpus = {name: statistics.median(c for _, c in runs) for name, runs in concurrent.items()}
    group = Table(
        f"(c) {TASKS} tasks commit() at once, {calls} each (median of {rounds} interleaved "
        f"round(s); raw: one durable transaction of {TASKS} rows per call, as a group commit "
        "of all of them at best)",
        ["contender", "events/s", "CPU us/event", "events/s ratio"],
    )
    for name in ("trio_sync", RAW):
        group.add(
            name,
            f"{rates[name]:,.0f}",
            f"{cpus[name] * 1e6:.1f}",
            f"{rates['trio_sync'] / rates[name]:.2f}x",
        )
    group.notes.append("CPU: this process's, the kernel's time for the fsyncs included.")
    group.print()
    summary[f"(c) {TASKS} tasks"] = {
        name: {"events_per_s": rates[name], "cpu_s_per_event": cpus[name]} for name in rates
    }
    write_json(
        args.out_dir,
        "offline",
        {
            "calls": calls,
            "rounds": rounds,
            "versions": versions(),
            "seconds_per_call": per_round,
            "concurrent": concurrent,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    run_script(main)
