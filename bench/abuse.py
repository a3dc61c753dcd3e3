"""Abuse: a normal client's latency on an idle server, and on the same server while a
thousand abusive connections are open. The goal: within 2x.

``python bench/abuse.py [--quick] [--connections 1000] [--rate 50] [--seconds 4]
[--prefill 20000] [--rounds R]``

The server (``trio-sync serve``) runs in its own process, its log prefilled so that a
pull of it outlasts any socket buffer. The abusive connections come from a separate
process: half idle (connected, said hello, then nothing), half never-reading pullers
(hello, pull from 0, then never read a byte; their TCP window is kept small). Measured:
commit call on client A until visible on client B (two normal trio_sync clients, fresh
each round), paced, with the abusers closed and open in turn (interleaved rounds).
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
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
    non_negative_int,
    pipe_receive,
    plot_cdfs,
    positive_float,
    positive_int,
    progress,
    quiet_when_interrupted,
    raise_fd_limit,
    rounds_latency_summary,
    run_script,
    spawn_server,
    temp_dir,
    trio_sync_server_command,
    workers,
    write_json,
)
from _contenders import open_trio_sync_pair, paced_latencies, versions
from _wire import RawConnection, open_idle, open_never_reading_puller, prefill

IDLE = "idle server"
ABUSED = "under abuse"
#: The goal: latency under abuse at most this many times the idle server's.
GOAL = 2.0
#: Abusive connections being opened at once.
OPEN_AT_ONCE = 50
#: Seconds left for the server to settle after the abusers open or close (the pulls'
#: first pages, the teardown of a thousand sessions): the steady state is measured.
SETTLE = 1.0


# --- the abuser process --------------------------------------------------------------


def abuser_worker(conn: Connection, url: str, connections: int) -> None:
    """Opens ``connections`` abusive connections on "open", closes them on "close"."""
    raise_fd_limit()
    quiet_when_interrupted(trio.run, _abuse, conn, url, connections)


async def _abuse(conn: Connection, url: str, connections: int) -> None:
    held: list[RawConnection] = []
    while (command := await pipe_receive(conn)) is not None:
        if command == "open":
            started = time.monotonic()
            failures = await _open_all(url, connections, held)
            conn.send({"open": len(held), "failed": failures, "s": time.monotonic() - started})
        elif command == "close":
            for raw in held:
                await raw.aclose()
            held.clear()
            conn.send({"open": 0})


async def _open_all(url: str, connections: int, held: list[RawConnection]) -> list[str]:
    limiter = trio.CapacityLimiter(OPEN_AT_ONCE)
    failures: list[str] = []

    async def open_one(index: int) -> None:
        opener = open_idle if index % 2 == 0 else open_never_reading_puller
        async with limiter:
            try:
                held.append(await opener(url))
            except (OSError, trio.BrokenResourceError) as exc:  # refused, reset, closed
                failures.append(f"{type(exc).__name__}: {exc}")

    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(open_one, index)
    return failures


# --- the measurement -----------------------------------------------------------------


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--connections", type=positive_int, help="abusive connections (default 1000)"
    )
    parser.add_argument("--rate", type=positive_float, help="normal client's events/s (default 50)")
    parser.add_argument(
        "--seconds", type=positive_float, help="seconds measured per round (default 4)"
    )
    parser.add_argument(
        "--prefill", type=non_negative_int, help="events in the log beforehand (20,000)"
    )
    options = parser.parse_args()
    quick = options.quick
    connections = options.connections or (20 if quick else 1000)
    rate = options.rate or (20.0 if quick else 50.0)
    seconds = options.seconds or (0.5 if quick else 4.0)
    log_size = options.prefill if options.prefill is not None else (2000 if quick else 20_000)
    rounds = options.rounds or (1 if quick else 3)
    count = max(5, round(rate * seconds))
    raise_fd_limit()
    print(f"abuse on {describe_machine()}", flush=True)

    with (
        temp_dir("abuse") as folder,
        spawn_server(trio_sync_server_command(folder / "server.sqlite3")) as server,
        workers(abuser_worker, [(server.url, connections)]) as (abuser,),
    ):
        await prefill(server.url, log_size, lambda i: {"i": i, "text": f"prefill {i}"})
        opened: list[dict[str, Any]] = []
        rss: dict[str, list[int]] = {IDLE: [], ABUSED: []}
        #: Server RSS while abused minus just before the abusers connected, per round.
        growth: list[int] = []

        async def measure(condition: str, round_index: int) -> Any:
            if condition == ABUSED:
                rss_before = server.rss()
                with trio.fail_after(300):
                    opened.append(await abuser.ask("open"))
                progress(
                    f"round {round_index + 1}: {opened[-1]['open']} abusive connections open "
                    f"({len(opened[-1]['failed'])} failed) in {opened[-1]['s']:.1f} s"
                )
                await trio.sleep(SETTLE)
            with temp_dir("abuse_round") as round_folder:
                async with open_trio_sync_pair(round_folder, server.url) as pair:
                    reached, latencies = await paced_latencies(pair, rate, count)
            rss[condition].append(server.rss())
            if condition == ABUSED:
                growth.append(rss[condition][-1] - rss_before)
                with trio.fail_after(120):
                    await abuser.ask("close")
                await trio.sleep(SETTLE)
            summary = latency_summary(latencies)
            progress(
                f"round {round_index + 1} {condition}: p50 {fmt_ms(summary['p50_ms'])} p99 "
                f"{fmt_ms(summary['p99_ms'])} ms, {count - len(latencies)} lost"
            )
            return reached, latencies

        results = await interleave(rounds, [IDLE, ABUSED], measure)
        server_alive = server.process.poll() is None

    summaries: dict[str, Any] = {}
    for condition, runs in results.items():
        summary = rounds_latency_summary([samples for _, samples in runs])
        summaries[condition] = {
            **summary,
            "reached": median([reached for reached, _ in runs]),
            "lost": rounds * count - summary["n"],
            "server_rss_mib": median([r / 2**20 for r in rss[condition]]),
        }
    idle, abused = summaries[IDLE], summaries[ABUSED]
    table = Table(
        f"abuse: a normal trio_sync client, commit until visible on another, {rate:g} events/s for "
        f"{seconds:g} s; {connections} abusive connections (half idle, half never-reading "
        f"pullers); {rounds} interleaved round(s)",
        ["condition", "reached/s", "p50 ms", "p99 ms", "max ms", "lost", "server RSS MiB"],
    )
    for condition, summary in summaries.items():
        table.add(
            condition,
            fmt_rate(summary["reached"]),
            fmt_ms(summary["p50_ms"]),
            fmt_ms(summary["p99_ms"]),
            fmt_ms(summary["max_ms"]),
            str(summary["lost"]),
            f"{summary['server_rss_mib']:.1f}",
        )
    p50, p99 = (
        fmt_ratio(abused["p50_ms"], idle["p50_ms"]),
        fmt_ratio(abused["p99_ms"], idle["p99_ms"]),
    )
    # The first abused round's growth: later rounds start from memory the server kept.
    per_connection = growth[0] / 1024 / connections
    table.notes += [
        f"under abuse / idle: p50 {p50}, p99 {p99} (goal: within {GOAL:g}x); p50, p99: "
        "median over rounds of each round's own.",
        f"server memory per abusive connection: {per_connection:.0f} KiB (first abused "
        "round: (RSS under abuse - RSS just before) / connections; the server keeps much of "
        "it after they leave, so later rounds start higher).",
        f"server log prefilled with {log_size:,} events; abusive connections opened: "
        + ", ".join(f"{o['open']} ({len(o['failed'])} failed)" for o in opened),
        f"server process still running at the end: {'yes' if server_alive else 'NO'}",
    ]
    table.print()
    write_json(
        options.out_dir,
        "abuse",
        {
            "connections": connections,
            "rate": rate,
            "seconds": seconds,
            "prefill": log_size,
            "rounds": rounds,
            "versions": versions(),
            "summary": summaries,
            "opened": opened,
            "rss_growth_bytes": growth,
            "server_alive": server_alive,
        },
    )
    if not options.no_plot:
        plot_cdfs(
            Path(options.out_dir) / "abuse.png",
            {
                f"{rate:g} events/s": {
                    condition: [1000 * x for _, samples in runs for x in samples]
                    for condition, runs in results.items()
                }
            },
            xlabel="ms from commit call until visible on the other client",
            title=f"normal client latency, idle server against {connections} abusive connections",
        )


if __name__ == "__main__":
    run_script(main)
