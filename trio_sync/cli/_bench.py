"""``trio-sync bench stall``: randomized scenarios under each push policy.

For every seed, the same scenario runs under ``park`` (LiveStore's legacy leader, the
peer) and ``supervised`` (trio_sync). The table counts stalls and measures virtual time to
converge against the limit: the time of the last commit plus one round trip, before which
no run can have converged. It names the first seed that stalls under ``park`` with the
command that replays that very run; with ``--plot FILE`` it also draws pending events over
virtual time for that seed, beside the ``supervised`` run of the same seed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..testing import ScenarioResult, check_run, run_scenario
from . import _args

POLICIES = ("park", "supervised")
#: Virtual seconds after which a scenario counts as stalled.
DEADLINE = 120.0


#: Trace steps after which a run may converge at the earliest: its last commit, and the end
#: of each outage the run's own faults cause (the server up again, a client restarted, a
#: partition healed): no engine converges while the server is down.
_EARLIEST = frozenset({"workload.done", "commit", "up", "restart", "heal"})


def _limit(result: ScenarioResult) -> float:
    """The earliest a run can converge: the last commit or the end of its last outage,
    whichever is later, plus one round trip."""
    last = max((r.t for r in result.trace if r.what in _EARLIEST), default=0.0)
    return last + 2 * (result.params.latency + result.params.jitter)


def run_one(task: tuple[int, str]) -> dict[str, Any]:
    """Runs one scenario; returns its figures (picklable, for worker processes)."""
    seed, policy = task
    result = run_scenario(seed, policy=policy, deadline=DEADLINE)
    return {
        "seed": seed,
        "policy": policy,
        "converged": result.converged,
        "checked": check_run(result).ok,
        "virtual": result.virtual_seconds,
        "limit": _limit(result),
        "wall": result.wall_seconds,
        "events": result.events_committed,
        # The command that replays this very run: the bench's deadline pinned, since
        # replay's default (300 s) would give a stalled run a longer trace.
        "replay": result.replay_command,
    }


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def table(rows: list[dict[str, Any]], out: TextIO) -> None:
    header = (
        f"{'policy':<11} {'scenarios':>9} {'stalled':>8} {'converged':>9} "
        f"{'p50 s':>8} {'p99 s':>8} {'p50 x limit':>11} {'p99 x limit':>11} "
        f"{'wall ms':>8} {'events/s':>9}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        done = [r for r in mine if r["converged"] and r["checked"]]
        times = [r["virtual"] for r in done]
        ratios = [r["virtual"] / r["limit"] for r in done if r["limit"] > 0]
        wall = sum(r["wall"] for r in mine)
        events = sum(r["events"] for r in mine)
        print(
            f"{policy:<11} {len(mine):>9} {len(mine) - len(done):>8} {len(done):>9} "
            f"{_percentile(times, 0.5):>8.3f} {_percentile(times, 0.99):>8.3f} "
            f"{_percentile(ratios, 0.5):>11.2f} {_percentile(ratios, 0.99):>11.2f} "
            f"{1000 * wall / max(1, len(mine)):>8.1f} {events / wall if wall else 0:>9.0f}",
            file=out,
        )


def plot(seed: int, path: str, out: TextIO) -> None:
    """Pending events over virtual time, ``park`` beside ``supervised``, for one seed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install matplotlib)", file=out)
        return
    runs = {policy: run_scenario(seed, policy=policy, deadline=DEADLINE) for policy in POLICIES}
    horizon = max(r.virtual_seconds for r in runs.values())
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, (policy, result) in zip(axes, runs.items(), strict=True):
        times = [t for t, _ in result.pending_timeline] + [result.virtual_seconds]
        counts = [n for _, n in result.pending_timeline]
        counts.append(counts[-1])
        axis.step(times, counts, where="post", color="tab:red" if policy == "park" else "tab:blue")
        verdict = "stalled" if result.stalled else f"converged at {result.virtual_seconds:.2f}s"
        axis.set_title(f"{policy}: {verdict}")
        axis.set_xlabel("virtual seconds")
        axis.set_xlim(0, horizon)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("events not acknowledged (all clients)")
    params = runs["park"].params
    figure.suptitle(
        f"seed {seed}: {params.clients} clients, {sum(params.events)} events, push batch "
        f"{params.push_batch_size}, ack loss {params.ack_loss:.0%}, page loss "
        f"{params.page_loss:.0%}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"plot: {path} (seed {seed}, park beside supervised)", file=out)


def run(
    scenarios: int, seed: int, jobs: int, plot_path: str | None, out: TextIO = sys.stdout
) -> list[dict[str, Any]]:
    """Runs the benchmark and prints its table (and writes the plot, given a path)."""
    jobs = jobs or os.cpu_count() or 1
    tasks = [(s, policy) for s in range(seed, seed + scenarios) for policy in POLICIES]
    print(
        f"{scenarios} scenarios x {len(POLICIES)} policies (seeds {seed}.."
        f"{seed + scenarios - 1}), {jobs} process(es), deadline {DEADLINE:g} virtual s",
        file=out,
    )
    started = time.perf_counter()
    if jobs == 1:
        rows = [run_one(task) for task in tasks]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            rows = list(pool.imap_unordered(run_one, tasks, chunksize=4))
    elapsed = time.perf_counter() - started
    print("", file=out)
    table(rows, out)
    print("", file=out)
    by_seed = {(r["seed"], r["policy"]): r for r in rows}
    stalled_park = sorted(s for s, p in by_seed if p == "park" and not by_seed[s, p]["converged"])
    failed = sorted(r["seed"] for r in rows if r["policy"] == "supervised" and not r["checked"])
    print(
        f"park stalled in {len(stalled_park)} of {scenarios} scenarios; supervised failed "
        f"{len(failed)}{f' (seeds {failed[:10]})' if failed else ''}.",
        file=out,
    )
    print(
        f"limit = last commit + one round trip; x limit = virtual time to converge / limit. "
        f"{len(tasks)} runs in {elapsed:.1f}s wall.",
        file=out,
    )
    if stalled_park:
        first = stalled_park[0]
        print(
            f"first seed stalled under park: {first}; replay: {by_seed[first, 'park']['replay']}",
            file=out,
        )
    if plot_path and stalled_park:
        plot(stalled_park[0], plot_path, out)
    elif plot_path:
        print("(no plot: park stalled in none of these scenarios)", file=out)
    return rows


def main(scenarios: int, seed: int, jobs: int, plot_path: str | None) -> int:
    rows = run(scenarios, seed, jobs, plot_path)
    failed = [r for r in rows if r["policy"] == "supervised" and not r["checked"]]
    return 1 if failed else 0


def add_parser(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    stall = benches.add_parser(
        "stall", help="randomized scenarios under each push policy: stalls and convergence"
    )
    stall.add_argument("--scenarios", type=_args.positive, default=200, help="scenarios per policy")
    stall.add_argument("--seed", type=_args.seed, default=0, help="first seed")
    stall.add_argument("--jobs", type=_args.count, default=0, help="processes (0: one per core)")
    stall.add_argument(
        "--plot",
        type=_args.new_file,
        default=None,
        metavar="FILE",
        help="write a PNG of pending events over time to FILE (default: no plot)",
    )
    stall.set_defaults(run=lambda args: main(args.scenarios, args.seed, args.jobs, args.plot))
