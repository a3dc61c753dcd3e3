"""The todo example (examples/todo): a real application under the simulator.

Every device must end with the same list; the app with the arrival-order bug is caught by
a seed, replays from the one-line command, and determinism holds across processes for a
workload that draws its own choices from world.random.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from examples.todo.app import TodoList
from examples.todo.simulation import arrival_order_workload, same_list_everywhere, workload
from trio_sync.testing import run_simulation
from trio_sync.testing.pytest_plugin import SimWorld
from trio_sync.testing.strategies import fault_mixes, seeds

ROOT = Path(__file__).resolve().parents[2]

DIGEST = (
    "from examples.todo.simulation import workload, same_list_everywhere\n"
    "from trio_sync.testing import run_simulation\n"
    "result = run_simulation({seed}, workload, invariant=same_list_everywhere)\n"
    "print(result.ok, result.trace_digest)"
)


def in_fresh_process(code: str, hash_seed: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        cwd=ROOT,
        check=True,
    )
    return result.stdout.strip()


def test_the_todo_workload_gives_the_same_trace_in_fresh_processes() -> None:
    here = run_simulation(3, workload, invariant=same_list_everywhere)
    assert here.ok, here.report()
    # The workload drew its edits, pauses and fault moments from world.random: plenty
    # to differ if anything in the run were not a function of the seed.
    assert sum(1 for r in here.trace if r.what == "todo.edit") == 36
    assert any(r.what == "partition" for r in here.trace)
    first = in_fresh_process(DIGEST.format(seed=3), "1")
    second = in_fresh_process(DIGEST.format(seed=3), "2")
    assert first == second == f"True {here.trace_digest}"
    again = run_simulation(3, workload, invariant=same_list_everywhere)
    assert [r.line() for r in again.trace] == [r.line() for r in here.trace]
    assert run_simulation(4, workload).trace_digest != here.trace_digest


def test_every_device_shows_the_same_list_under_faults(sim_world: SimWorld) -> None:
    for seed in range(8):
        # The invariant ran on every device's live app; the store of each tells the same.
        result = sim_world(workload, seed, invariant=same_list_everywhere)
        assert result.online == ("phone", "laptop", "tablet") and result.value == 36
        assert all(log == result.server_log for log in result.logs.values())
        assert len(result.server_log) == 36 and TodoList.fold(result.server_log).shown()


def test_the_arrival_order_bug_is_caught_by_a_seed_and_replays(sim_world: SimWorld) -> None:
    caught = sim_world(arrival_order_workload, 0, invariant=same_list_everywhere, expect="fail")
    assert caught.failure is not None and caught.failure.kind == "invariant"
    assert "show another list than the log's" in caught.failure.message
    report = caught.report()
    assert report.startswith("seed 0: FAILED (invariant)")
    assert "trace from the first fault" in report
    command = caught.replay_command
    assert command == (
        "trio-sync replay --seed 0 --workload examples.todo.simulation:arrival_order_workload "
        "--invariant examples.todo.simulation:same_list_everywhere"
    )
    replayed = subprocess.run(
        [sys.executable, "-m", "trio_sync.cli", *command.split()[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert replayed.returncode == 1, replayed.stderr
    digest = re.search(r"trace digest ([0-9a-f]{16})", replayed.stdout)
    assert digest is not None and digest.group(1) == caught.trace_digest[:16]
    assert "show another list than the log's" in replayed.stdout
    # Not every seed catches it: the bug needs two devices renaming one item at once.
    passed = [s for s in range(1, 12) if run_simulation(s, arrival_order_workload).ok]
    assert passed, "some seeds should miss the bug"


def test_the_example_runs_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.todo", "--seeds", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TodoApp: 4 of 4 seeds converged to one list on every device" in result.stdout
    assert re.search(r"ArrivalOrderTodoApp: [1-4] of 4 seeds caught the bug", result.stdout)
    assert "smallest failing parameters:" in result.stdout


@settings(deadline=None, max_examples=8, derandomize=True)
@given(seed=seeds(), faults=fault_mixes(), devices=st.integers(1, 4))
def test_property_the_lists_agree_whatever_the_faults(
    seed: int, faults: dict[str, object], devices: int
) -> None:
    result = run_simulation(
        seed, workload, invariant=same_list_everywhere, devices=devices, edits=6, **faults
    )
    assert result.ok, result.report()
