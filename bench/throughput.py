"""Throughput and latency of one writer and one reader: trio_sync against its peers and
the fsync limit, in one run.

``python bench/throughput.py [--quick] [--events N] [--rounds R] [--seconds S]``

Burst: events per second from A's first commit until B holds all N, committed
(a) by one task, one at a time; (b) by 16 concurrent tasks; (c) in batches of 100
(trio_sync: ``commit_many``, detected). Paced: commit call to visible on B at 200 and
1,000 events/s (p50, p99, max, and the rate actually reached). See bench/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    NA,
    Table,
    base_parser,
    describe_machine,
    existing_folder,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    interleave,
    median,
    percentile,
    plot_cdfs,
    positive_float,
    positive_int,
    progress,
    rounds_latency_summary,
    run_script,
    temp_dir,
    write_json,
)
from _contenders import (
    Contender,
    burst,
    fsync_limit,
    fsync_limit_in_thread,
    paced_latencies,
    pair_contenders,
    versions,
)

import trio_sync

LIMIT = "fsync limit"
#: The fsync limit with each transaction in a worker thread (a note under the table).
THREADED = "fsync via thread"
#: Burst targets of (b) and (c) against the peers' one-message-per-event burst (a).
PEER_TARGETS = {"relay": 3.0, "pycrdt": 10.0}
#: The goal for one-task-at-a-time commits, as a fraction of the fsync limit.
TARGET_OF_LIMIT = 0.80
RATES = (200, 1000)


@dataclass(frozen=True)
class Scenario:
    label: str
    tasks: int
    batch: int
    #: Events per durable transaction in the fsync limit that fits this scenario.
    limit_batch: int


SCENARIOS = (
    Scenario("(a) one task", tasks=1, batch=0, limit_batch=1),
    Scenario("(b) 16 tasks", tasks=16, batch=0, limit_batch=1),
    Scenario("(c) batches of 100", tasks=1, batch=100, limit_batch=100),
)


@dataclass(frozen=True)
class Sizes:
    events: int
    rounds: int
    seconds: float


def sizes(args: Any) -> Sizes:
    quick = args.quick
    return Sizes(
        events=args.events or (200 if quick else 3000),
        rounds=args.rounds or (1 if quick else 3),
        seconds=args.seconds or (0.5 if quick else 5.0),
    )


def has_commit_many() -> bool:
    return hasattr(trio_sync.Client, "commit_many")


async def measure_bursts(
    contenders: list[Contender], size: Sizes, placement: str, tmp_dir: str | None
) -> dict[str, dict[str, list[float | None]]]:
    """Per scenario, per contender (and the fsync limit): events/s of each round."""
    results: dict[str, dict[str, list[float | None]]] = {}
    for scenario in SCENARIOS:

        async def measure(name: str, round_index: int, scenario: Scenario = scenario) -> Any:
            with temp_dir("throughput", tmp_dir) as folder:
                if name == LIMIT:
                    rate: float | None = fsync_limit(folder, size.events, scenario.limit_batch)
                elif name == THREADED:
                    rate = await fsync_limit_in_thread(folder, size.events)
                elif name == "trio_sync" and scenario.batch and not has_commit_many():
                    rate = None
                else:
                    contender = next(c for c in contenders if c.name == name)
                    async with contender.pair(folder, placement) as pair:
                        rate = await burst(pair, size.events, scenario.tasks, scenario.batch)
            progress(f"round {round_index + 1} {scenario.label} {name}: {fmt_rate(rate)} events/s")
            return rate

        names = [c.name for c in contenders] + [LIMIT]
        if not scenario.batch and scenario.tasks == 1:
            names.append(THREADED)
        results[scenario.label] = await interleave(size.rounds, names, measure)
    return results


async def measure_paced(
    contenders: list[Contender], size: Sizes, placement: str, tmp_dir: str | None
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per rate, per contender: the rates reached and every latency (seconds)."""
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for rate in RATES:
        count = max(10, round(rate * size.seconds))

        async def measure(name: str, round_index: int, rate: int = rate, count: int = count) -> Any:
            contender = next(c for c in contenders if c.name == name)
            with temp_dir("paced", tmp_dir) as folder:
                async with contender.pair(folder, placement) as pair:
                    reached, latencies = await paced_latencies(pair, rate, count)
            progress(
                f"round {round_index + 1} paced {rate}/s {name}: reached {reached:.0f}/s, "
                f"p99 {fmt_ms(1000 * percentile(latencies, 0.99))} ms"
            )
            return reached, latencies

        rounds = await interleave(size.rounds, [c.name for c in contenders], measure)
        results[rate] = {
            name: {
                "reached": [r for r, _ in runs],
                "rounds": [samples for _, samples in runs],
                "latencies": [x for _, samples in runs for x in samples],
            }
            for name, runs in rounds.items()
        }
    return results


def burst_table(
    bursts: dict[str, dict[str, list[float | None]]], all_names: list[str], size: Sizes
) -> tuple[Table, dict[str, dict[str, float | None]]]:
    peers = [n for n in all_names if n != "trio_sync"]
    table = Table(
        f"burst: {size.events:,} events from A's first commit until B holds them all "
        f"(events/s, median of {size.rounds} interleaved round(s); ratio = trio_sync / other)",
        ["scenario", *all_names, LIMIT, *(f"vs {p}" for p in peers), "vs limit"],
    )
    medians: dict[str, dict[str, float | None]] = {}
    for scenario in SCENARIOS:
        runs = bursts[scenario.label]
        row_medians = {name: _median_or_none(runs.get(name)) for name in [*all_names, LIMIT]}
        medians[scenario.label] = row_medians
        ours = row_medians["trio_sync"]
        cells = []
        for name in all_names:
            value = row_medians[name]
            if name == "trio_sync" and value is None and scenario.batch:
                cells.append("n/a (no commit_many)")
            else:
                cells.append(fmt_rate(value))
        ratios = [fmt_ratio(ours, row_medians[p]) for p in [*peers, LIMIT]]
        table.add(scenario.label, *cells, fmt_rate(row_medians[LIMIT]), *ratios)
    first = SCENARIOS[0].label
    limit = medians[first][LIMIT]
    ours = medians[first]["trio_sync"]
    reached = f"{ours / limit:.2f}x" if ours and limit else NA
    threaded = _median_or_none(bursts[first].get(THREADED))
    table.notes += [
        f"target: (a) at {TARGET_OF_LIMIT:.2f}x of the fsync limit or better; now {reached}. "
        f"The same transactions sent to a worker thread (as an event loop must, so that an "
        f"fsync never blocks it) reach {fmt_rate(threaded)}/s, "
        f"{fmt_ratio(threaded, limit)} of the limit.",
        *_peer_targets(medians, all_names),
        "fsync limit: one durable SQLite transaction (WAL, synchronous=FULL) per event; in "
        "(c) one per 100 events.",
        "(c): trio_sync commit_many; relay one frame per batch; pycrdt one Array.extend.",
    ]
    return table, medians


def _peer_targets(medians: dict[str, dict[str, float | None]], names: list[str]) -> list[str]:
    """(b) and (c) against each peer's one-message-per-event burst (a), the issue's bar."""
    lines = []
    first = SCENARIOS[0].label
    for scenario in SCENARIOS[1:]:
        ours = medians[scenario.label]["trio_sync"]
        parts = []
        for peer, goal in PEER_TARGETS.items():
            if peer not in names:
                continue
            ratio = ours / theirs if ours and (theirs := medians[first][peer]) else None
            verdict = NA if ratio is None else ("met" if ratio >= goal else "missed")
            shown = NA if ratio is None else f"{ratio:.2f}x"
            parts.append(f"{shown} of {peer} (a), goal {goal:g}x: {verdict}")
        lines.append(f"target {scenario.label}: " + "; ".join(parts))
    return lines


def _median_or_none(values: list[float | None] | None) -> float | None:
    present = [v for v in values or [] if v is not None]
    return median(present) if present else None


def paced_table(
    paced: dict[int, dict[str, dict[str, Any]]], all_names: list[str], size: Sizes
) -> tuple[Table, dict[str, Any]]:
    table = Table(
        f"paced: commit call until visible on B, {size.seconds:g} s at each rate, "
        f"{size.rounds} interleaved round(s) (ratio = trio_sync / other)",
        [
            "rate/s",
            "contender",
            "reached/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p50 ratio",
            "p99 ratio",
        ],
        left=2,
    )
    summaries: dict[str, Any] = {}
    for rate in RATES:
        by_name = paced.get(rate, {})
        ours = rounds_latency_summary(by_name["trio_sync"]["rounds"]) if by_name else None
        for name in all_names:
            if name not in by_name:
                table.add(str(rate), name, NA, NA, NA, NA, NA, NA)
                continue
            summary = rounds_latency_summary(by_name[name]["rounds"])
            reached = median(by_name[name]["reached"])
            summaries[f"{rate}/{name}"] = {
                **summary,
                "reached": reached,
                "cdf_ms": [
                    1000 * percentile(by_name[name]["latencies"], q / 100) for q in range(1, 101)
                ],
            }
            assert ours is not None
            table.add(
                str(rate),
                name,
                fmt_rate(reached),
                fmt_ms(summary["p50_ms"]),
                fmt_ms(summary["p99_ms"]),
                fmt_ms(summary["max_ms"]),
                fmt_ratio(ours["p50_ms"], summary["p50_ms"]),
                fmt_ratio(ours["p99_ms"], summary["p99_ms"]),
            )
    table.notes += [
        "reached: commits per second the writer managed against the schedule.",
        "p50, p99: median over rounds of each round's own; max: over all rounds.",
    ]
    return table, summaries


async def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=positive_int, help="events per burst (default 3000)")
    parser.add_argument(
        "--seconds", type=positive_float, help="seconds at each paced rate (default 5)"
    )
    parser.add_argument(
        "--placement",
        choices=("processes", "one-process"),
        default="processes",
        help="each contender's server in a process of its own (default), or in this one "
        "beside both clients",
    )
    parser.add_argument(
        "--tmp-dir",
        type=existing_folder,
        help="where the stores go (default: the system's temporary folder); /dev/shm takes "
        "the disk out of the picture",
    )
    args = parser.parse_args()
    size = sizes(args)
    everyone = pair_contenders()
    runnable = [c for c in everyone if c.missing is None]
    all_names = [c.name for c in everyone]
    stores = args.tmp_dir or "the temporary folder"
    print(
        f"throughput on {describe_machine()}; servers: {args.placement}; stores: {stores}",
        flush=True,
    )
    for contender in everyone:
        if contender.missing:
            print(f"{contender.name}: {contender.missing}", flush=True)
    print(flush=True)

    bursts = await measure_bursts(runnable, size, args.placement, args.tmp_dir)
    paced = await measure_paced(runnable, size, args.placement, args.tmp_dir)

    table, medians = burst_table(bursts, all_names, size)
    table.print()
    latency, summaries = paced_table(paced, all_names, size)
    latency.print()
    write_json(
        args.out_dir,
        "throughput",
        {
            "sizes": size.__dict__,
            "placement": args.placement,
            "tmp_dir": args.tmp_dir,
            "versions": versions(),
            "missing": {c.name: c.missing for c in everyone if c.missing},
            "burst_events_per_s": {"rounds": bursts, "median": medians},
            "paced": summaries,
        },
    )
    if not args.no_plot:
        plot_cdfs(
            Path(args.out_dir) / "throughput.png",
            {
                f"{rate} events/s": {
                    name: [1000 * x for x in runs["latencies"]]
                    for name, runs in paced[rate].items()
                }
                for rate in RATES
            },
            xlabel="ms from commit call until visible on the other client",
            title="commit-to-visible latency CDF (paced)",
        )


if __name__ == "__main__":
    run_script(main)
