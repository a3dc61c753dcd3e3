"""``trio-sync replay``: run one simulated scenario again and show what happened."""

from __future__ import annotations

import sys
from typing import TextIO

from .testing import canonical_params, check_run, run_scenario


def replay(
    seed: int,
    policy: str,
    scenario: str | None = None,
    full_trace: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Replays a run; returns 0 when it converged and passed every check, else 1."""
    pinned = canonical_params(scenario) if scenario else {}
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
