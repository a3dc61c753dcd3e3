"""``trio-sync replay``: run one simulated run again and show what happened.

Without ``--workload`` it replays ``run_scenario`` (the simulator's generated workload);
with ``--workload module:function`` it replays the user's own workload under
``run_simulation``. ``--shrink`` looks for the smallest parameters that still fail.
"""

from __future__ import annotations

import argparse
import ast
import sys
from typing import Any, TextIO

from ..testing import canonical_params, check_run, run_scenario, run_simulation
from ..testing._shrink import MAX_RUNS, shrink, shrink_scenario
from ..testing._simulation import load_callable
from . import _args


def parse_params(assignments: list[str]) -> dict[str, Any]:
    """``["clients=2", "events=(3, 4)"]`` -> ``{"clients": 2, "events": (3, 4)}``.

    Raises:
        ValueError: An assignment is not ``name=python-literal``.
    """
    pinned: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes name=value, got {assignment!r}")
        try:
            pinned[name.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"--param {name}: {text!r} is not a Python literal") from None
    return pinned


def replay(
    seed: int,
    policy: str | None = None,
    scenario: str | None = None,
    full_trace: bool = False,
    params: list[str] | None = None,
    out: TextIO = sys.stdout,
    *,
    workload: str | None = None,
    invariant: str | None = None,
    step_invariant: str | None = None,
    shrinking: bool = False,
    max_runs: int = MAX_RUNS,
) -> int:
    """Replays a run; returns 0 when it converged and passed every check, else 1.

    Raises:
        ValueError: Bad arguments (a workload with a policy or a scenario, an unknown
            name, a parameter that is not a literal).
        TypeError: An unknown parameter.
    """
    if workload is not None:
        if policy is not None or scenario is not None:
            raise ValueError(
                "--policy and --scenario replay run_scenario; a workload chooses its own "
                "push policy (pass it through world.param if it is a parameter)"
            )
        return _replay_workload(
            seed,
            workload,
            invariant,
            step_invariant,
            parse_params(params or []),
            full_trace=full_trace,
            shrinking=shrinking,
            max_runs=max_runs,
            out=out,
        )
    if invariant is not None or step_invariant is not None:
        raise ValueError("--invariant and --step-invariant need --workload")
    policy = policy or "supervised"
    pinned = canonical_params(scenario) if scenario else {}
    pinned.update(parse_params(params or []))
    if shrinking:
        found = shrink_scenario(
            seed, policy=policy, max_runs=max_runs, progress=_printer(out), **pinned
        )
        # The header and each reduction were printed as they came: not again.
        print(found.report(steps=False), file=out)
        return 1
    result = run_scenario(seed, policy=policy, **pinned)
    if full_trace or scenario:
        print(result.trace.format(), file=out)
    else:
        print(f"last 30 of {len(result.trace)} steps (--full-trace for all):", file=out)
        print(result.trace.format(limit=30), file=out)
    print("", file=out)
    print(check_run(result), file=out)
    verdict = "converged" if result.converged else "STALLED"
    print(
        f"{verdict} at t={result.virtual_seconds:.4f} virtual seconds, "
        f"{result.events_committed} events, trace digest {result.trace_digest[:16]}, "
        f"{result.wall_seconds:.2f}s wall",
        file=out,
    )
    return 0 if check_run(result).ok else 1


def _replay_workload(
    seed: int,
    workload_name: str,
    invariant_name: str | None,
    step_invariant_name: str | None,
    pinned: dict[str, Any],
    *,
    full_trace: bool,
    shrinking: bool,
    max_runs: int,
    out: TextIO,
) -> int:
    workload = load_callable(workload_name)
    invariant = load_callable(invariant_name) if invariant_name else None
    step_invariant = load_callable(step_invariant_name) if step_invariant_name else None
    if shrinking:
        found = shrink(
            seed,
            workload,
            invariant=invariant,
            step_invariant=step_invariant,
            max_runs=max_runs,
            progress=_printer(out),
            **pinned,
        )
        print(found.smallest.report(), file=out)
        print("", file=out)
        print(found.report(steps=False), file=out)  # the steps were printed as they came
        return 1
    result = run_simulation(
        seed, workload, invariant=invariant, step_invariant=step_invariant, **pinned
    )
    if full_trace:
        print(result.trace.format(), file=out)
        print("", file=out)
    print(result.report(), file=out)
    print(
        f"{'ok' if result.ok else 'FAILED'} at t={result.virtual_seconds:.4f} virtual "
        f"seconds, {result.events_committed} events, trace digest "
        f"{result.trace_digest[:16]}, {result.wall_seconds:.2f}s wall",
        file=out,
    )
    return 0 if result.ok else 1


def _printer(out: TextIO) -> Any:
    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    return progress


def add_parser(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="run one simulated run again from its seed and show its trace",
        description="Replays run_scenario (the simulator's own workload), or your own "
        "workload with --workload module:function, from its seed.",
    )
    replay.add_argument("--seed", type=_args.seed, required=True, help="the run's seed")
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
    replay.add_argument(
        "--max-runs", type=_args.positive, default=100, help="how many runs --shrink may take"
    )

    replay.set_defaults(run=run_replay)


def run_replay(args: argparse.Namespace) -> int:
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
