"""``trio-sync replay``: run one simulated scenario again and show what happened."""

from __future__ import annotations

import ast
import sys
from typing import Any, TextIO

from .testing import canonical_params, check_run, run_scenario


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
    policy: str,
    scenario: str | None = None,
    full_trace: bool = False,
    params: list[str] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Replays a run; returns 0 when it converged and passed every check, else 1."""
    pinned = canonical_params(scenario) if scenario else {}
    pinned.update(parse_params(params or []))
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
