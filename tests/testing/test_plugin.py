"""The pytest fixtures: sim_world fails a test with the report a person needs."""

from __future__ import annotations

import pytest

from examples.todo.simulation import arrival_order_workload, same_list_everywhere, workload
from trio_sync.testing.pytest_plugin import SimWorld


def test_a_failing_run_fails_the_test_with_seed_trace_and_replay(sim_world: SimWorld) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        sim_world(arrival_order_workload, 0, invariant=same_list_everywhere)
    message = str(failed.value)
    assert message.startswith("seed 0: FAILED (invariant)")
    assert "trace from the first fault" in message
    assert message.rstrip().endswith(
        "replay: trio-sync replay --seed 0 --workload "
        "examples.todo.simulation:arrival_order_workload "
        "--invariant examples.todo.simulation:same_list_everywhere"
    )
    assert len(sim_world.results) == 1 and not sim_world.results[0].ok


def test_expect_fail_and_expect_any(sim_world: SimWorld) -> None:
    caught = sim_world(arrival_order_workload, 0, invariant=same_list_everywhere, expect="fail")
    assert not caught.ok
    with pytest.raises(pytest.fail.Exception, match="expected seed 1 to fail, but it passed"):
        sim_world(workload, 1, invariant=same_list_everywhere, expect="fail")
    assert sim_world(arrival_order_workload, 0, expect="any").ok  # no invariant: no check
    with pytest.raises(ValueError, match="expect must be"):
        sim_world(workload, 1, expect="converged")


def test_sim_shrink_adds_the_smallest_failing_parameters() -> None:
    shrinking = SimWorld(shrink_failures=True)
    with pytest.raises(pytest.fail.Exception) as failed:
        shrinking(arrival_order_workload, 0, invariant=same_list_everywhere)
    assert "smallest failing parameters:" in str(failed.value)
