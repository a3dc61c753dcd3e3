"""The ``trio-sync`` command."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from ._errors import TrioSyncError
from ._groups import single_exception
from .server import Server, serve


async def _serve_until_signalled(db: str, host: str, port: int, schema: tuple[str, int]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, single_exception():
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                lambda task_status: serve(
                    db,
                    host,
                    port,
                    schema_name=schema[0],
                    schema_version=schema[1],
                    task_status=task_status,
                )
            )
            print(f"trio-sync serving {db} at {server.url}", flush=True)
            async for signum in signals:
                print(f"trio-sync: {signal.Signals(signum).name}, shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sync", description="A local-first event-log sync engine for Trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run a sync server")
    run.add_argument("--db", required=True, help="the server's SQLite file (created if missing)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    run.add_argument("--schema-name", default="default", help="application schema name")
    run.add_argument("--schema-version", type=int, default=1, help="application schema version")

    demo = commands.add_parser(
        "demo", help="an embedded server and two clients syncing on loopback"
    )
    demo.add_argument("--events", type=int, default=50, help="events each client commits")
    demo.add_argument("--seed", type=int, default=1, help="seed for what the clients commit")

    replay = commands.add_parser(
        "replay",
        help="run one simulated run again from its seed and show its trace",
        description="Replays run_scenario (the simulator's own workload), or your own "
        "workload with --workload module:function, from its seed.",
    )
    replay.add_argument("--seed", type=int, required=True, help="the run's seed")
    replay.add_argument(
        "--policy",
        choices=["supervised", "park"],
        default=None,
        help="the clients' push policy (run_scenario only; default supervised)",
    )
    replay.add_argument(
        "--scenario",
        choices=["lost-ack", "lost-ack-and-echo"],
        help="a canonical reproduction (pins every parameter)",
    )
    replay.add_argument("--full-trace", action="store_true", help="print every step")
    replay.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pin a parameter, e.g. --param clients=2 (repeatable)",
    )
    replay.add_argument(
        "--workload",
        metavar="MODULE:FUNCTION",
        help="replay your own workload (async def workload(world)) under run_simulation",
    )
    replay.add_argument(
        "--invariant", metavar="MODULE:FUNCTION", help="the invariant checked at the end"
    )
    replay.add_argument(
        "--step-invariant", metavar="MODULE:FUNCTION", help="the invariant checked every step"
    )
    replay.add_argument(
        "--shrink",
        action="store_true",
        help="look for the smallest parameters (fewer faults, fewer clients) that still fail",
    )
    replay.add_argument("--max-runs", type=int, default=100, help="how many runs --shrink may take")

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    stall = benches.add_parser(
        "stall", help="randomized scenarios under each push policy: stalls and convergence"
    )
    stall.add_argument("--scenarios", type=int, default=200, help="scenarios per policy")
    stall.add_argument("--seed", type=int, default=0, help="first seed")
    stall.add_argument("--jobs", type=int, default=0, help="processes (0: one per core)")
    stall.add_argument("--plot", default="stall.png", help="PNG of pending events over time")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sync`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            trio.run(
                _serve_until_signalled,
                args.db,
                args.host,
                args.port,
                (args.schema_name, args.schema_version),
            )
            return 0
        if args.command == "demo":
            from ._demo import main as demo_main

            return demo_main(args.events, args.seed)
        if args.command == "replay":
            from ._replay import replay

            try:
                return replay(
                    args.seed,
                    args.policy,
                    args.scenario,
                    args.full_trace,
                    args.param,
                    workload=args.workload,
                    invariant=args.invariant,
                    step_invariant=args.step_invariant,
                    shrinking=args.shrink,
                    max_runs=args.max_runs,
                )
            except (ValueError, TypeError) as exc:
                print(f"trio-sync replay: {exc}", file=sys.stderr)
                return 2
        if args.command == "bench":
            from ._bench_stall import main as bench_main

            return bench_main(args.scenarios, args.seed, args.jobs, args.plot)
    except TrioSyncError as exc:
        print(f"trio-sync {args.command}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
