"""Shrinking a failing seed to the smallest parameters that still fail the same way."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from examples.todo.simulation import arrival_order_workload, same_list_everywhere, workload
from trio_sync.cli._replay import replay
from trio_sync.testing import NO_FAULTS, run_scenario, run_simulation, shrink, shrink_scenario

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "trio_sync.cli"]


def test_a_failing_todo_seed_shrinks_to_fewer_faults_devices_and_edits() -> None:
    found = shrink(0, arrival_order_workload, invariant=same_list_everywhere)
    assert found.kind == "invariant" and found.original.params.ack_loss > 0
    pins = found.pins
    # The background faults are not needed for this bug; neither are all the devices.
    assert pins["ack_loss"] == NO_FAULTS["ack_loss"]
    assert pins["devices"] < 3 or pins["edits"] < 12
    assert found.steps and not found.exhausted and found.runs <= 100
    smallest = found.smallest
    assert smallest.failure is not None and smallest.failure.kind == "invariant"
    # The pins replay the smallest run exactly, and every one of them is in its command.
    again = run_simulation(0, arrival_order_workload, invariant=same_list_everywhere, **pins)
    assert again.trace_digest == smallest.trace_digest and not again.ok
    for name, value in pins.items():
        assert f"{name}={value!r}" in found.replay_command
    report = found.report()
    assert "smallest failing parameters:" in report and "still fails with" in report


def test_shrinking_a_run_that_passes_is_refused() -> None:
    assert run_simulation(0, workload, invariant=same_list_everywhere).ok
    with pytest.raises(ValueError, match="seed 0 does not fail"):
        shrink(0, workload, invariant=same_list_everywhere)


def test_the_run_budget_is_respected() -> None:
    found = shrink(0, arrival_order_workload, invariant=same_list_everywhere, max_runs=2)
    assert found.runs == 2 and found.exhausted and len(found.steps) <= 1
    assert "raise --max-runs" in found.report()


def test_a_stalling_scenario_shrinks_to_one_client() -> None:
    # README's randomized reproduction: 2 clients and 7% lost acks stall the park policy.
    found = shrink_scenario(299, policy="park", deadline=60)
    assert found.kind == "stalled" and found.pins["clients"] == 1
    assert len(found.pins["events"]) == 1 and found.pins["events"][0] < 214
    assert run_scenario(299, policy="park", **found.pins).stalled
    assert run_scenario(299, policy="supervised", **found.pins).converged


def test_replay_shrink_on_the_command_line() -> None:
    result = subprocess.run(
        [
            *CLI,
            "replay",
            "--seed",
            "0",
            "--workload",
            "examples.todo.simulation:arrival_order_workload",
            "--invariant",
            "examples.todo.simulation:same_list_everywhere",
            "--shrink",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert "shrinking seed 0 (fails: invariant)" in result.stdout
    smallest = result.stdout.split("replay: ")[-1].strip()
    assert smallest.startswith("trio-sync replay --seed 0 --workload") and "--param" in smallest
    replayed = subprocess.run(
        [*CLI, *shlex.split(smallest)[1:]], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert replayed.returncode == 1 and "FAILED (invariant)" in replayed.stdout


def test_replay_shrink_prints_each_reduction_once_after_the_header() -> None:
    # Tried: trio-sync replay --seed 299 --policy park --shrink. Every "still fails with"
    # line came twice: as it was found (before any header), then again in the report.
    out = io.StringIO()
    code = replay(299, "park", params=["deadline=60"], shrinking=True, max_runs=6, out=out)
    assert code == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "shrinking seed 299 (fails: stalled), up to 6 runs:"
    steps = [line for line in lines if "still fails with" in line]
    assert steps and len(steps) == len(set(steps))
    assert lines[1 : 1 + len(steps)] == steps  # straight after the header
    assert sum("shrinking seed" in line for line in lines) == 1
    assert lines[-2].startswith("smallest failing parameters: clients=1")
    assert lines[-1].startswith("replay: trio-sync replay --seed 299 --policy park")
