"""pytest fixtures for simulator tests. Enable with, in your ``conftest.py``::

    pytest_plugins = ["trio_sync.testing.pytest_plugin"]

Then::

    def test_my_scenario(simulate):
        result = simulate(seed=7, clients=3, ack_loss=0.2)   # fails with the full report
        assert result.events_committed > 0

    def test_many_seeds(simulate, sim_seeds):
        for seed in sim_seeds:                               # pytest --sim-seeds 500
            simulate(seed)

A failing run fails the test with the checker's report: the problem, the stall
explanation, and the ``trio-sync replay ...`` command that reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._checker import check_run
from ._scenario import ScenarioResult, run_scenario

Simulate = Callable[..., ScenarioResult]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trio_sync")
    group.addoption(
        "--sim-seeds",
        type=int,
        default=10,
        help="how many seeds the sim_seeds fixture yields (default 10)",
    )
    group.addoption(
        "--sim-first-seed", type=int, default=0, help="the first seed of sim_seeds (default 0)"
    )


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> range:
    """Seeds to sweep: ``--sim-first-seed`` on, ``--sim-seeds`` of them."""
    first = request.config.getoption("--sim-first-seed")
    return range(first, first + request.config.getoption("--sim-seeds"))


@pytest.fixture
def simulate() -> Simulate:
    """``simulate(seed, *, policy="supervised", expect="converged", **params)``.

    Runs the scenario and checks it: with ``expect="converged"`` (the default) any
    problem fails the test; with ``expect="stalled"`` the run must stall; with
    ``expect="any"`` nothing is checked (look at the result yourself).
    """

    def run(
        seed: int, *, policy: str = "supervised", expect: str = "converged", **params: Any
    ) -> ScenarioResult:
        result = run_scenario(seed, policy=policy, **params)
        report = check_run(result)
        if expect == "converged" and not report.ok:
            pytest.fail(str(report), pytrace=False)
        if expect == "stalled" and not result.stalled:
            pytest.fail(
                f"expected a stall, but it converged: {result.replay_command}", pytrace=False
            )
        return result

    return run
