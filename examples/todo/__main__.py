"""``python -m examples.todo [--seeds N]``: the todo list under the simulator.

Runs N seeds of the correct application (every one must converge to the same list on
every device), then N seeds of the application with the arrival-order bug, shows the
first seed that catches it, and shrinks it to the smallest failing parameters.
"""

from __future__ import annotations

import argparse
import time

from trio_sync.testing import run_simulation, shrink

from .simulation import arrival_order_workload, same_list_everywhere, workload


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.todo")
    parser.add_argument("--seeds", type=int, default=50, help="seeds per application")
    args = parser.parse_args()

    started = time.perf_counter()
    good = [run_simulation(s, workload, invariant=same_list_everywhere) for s in range(args.seeds)]
    failed = [r.seed for r in good if not r.ok]
    print(
        f"TodoApp: {len(good) - len(failed)} of {len(good)} seeds converged to one list on "
        f"every device ({time.perf_counter() - started:.1f}s)"
        + (f"; FAILED: {failed}" if failed else "")
    )

    started = time.perf_counter()
    buggy = [
        run_simulation(s, arrival_order_workload, invariant=same_list_everywhere)
        for s in range(args.seeds)
    ]
    caught = [r for r in buggy if not r.ok]
    print(
        f"ArrivalOrderTodoApp: {len(caught)} of {len(buggy)} seeds caught the bug "
        f"({time.perf_counter() - started:.1f}s)"
    )
    if caught:
        first = caught[0]
        print(f"\nthe first seed that catches it:\n{first.report(limit=20)}\n")
        found = shrink(first.seed, arrival_order_workload, invariant=same_list_everywhere)
        print(found.report())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
