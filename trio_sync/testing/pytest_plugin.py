"""pytest fixtures for simulator tests. Enable with, in your ``conftest.py``::

    pytest_plugins = ["trio_sync.testing.pytest_plugin"]

Then, for your own workload (``async def workload(world)``)::

    def test_my_app(sim_world):
        sim_world(workload, seed=7, invariant=same_list_everywhere, devices=3)

    def test_my_app_over_seeds(sim_world, sim_seeds):      # pytest --sim-seeds 500
        for seed in sim_seeds:
            sim_world(workload, seed, invariant=same_list_everywhere)

A failing run fails the test with its report: the seed, the failure, the trace from the
first fault on, and the one-line replay command (``--sim-shrink`` adds the smallest
failing parameters). For the simulator's own scenarios::

    def test_my_scenario(simulate):
        result = simulate(seed=7, clients=3, ack_loss=0.2)   # fails with the full report
        assert result.events_committed > 0

    def test_many_seeds(simulate, sim_seeds):
        for seed in sim_seeds:                               # pytest --sim-seeds 500
            simulate(seed)

A failing scenario fails the test with the checker's report: the problem, the stall
explanation, and the ``trio-sync replay ...`` command that reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ._checker import check_run
from ._engine import Workload
from ._invariant import Invariant
from ._scenario import ScenarioResult, run_scenario
from ._shrink import shrink
from ._simulation import SimulationResult, run_simulation

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
    group.addoption(
        "--sim-shrink",
        action="store_true",
        help="when a sim_world run fails, shrink it and report the smallest failing parameters",
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


class SimWorld:
    """The ``sim_world`` fixture: runs a workload and fails the test with its report.

    ``sim_world(workload, seed=0, *, invariant=None, step_invariant=None, expect="ok",
    **params)`` returns the :class:`SimulationResult`. ``expect="ok"`` (the default)
    fails the test unless the run converged and every check passed; ``expect="fail"``
    fails it unless the run failed (a test that a bug is caught); ``expect="any"``
    checks nothing.
    """

    def __init__(self, shrink_failures: bool) -> None:
        self._shrink = shrink_failures
        #: Every result this test produced, in order.
        self.results: list[SimulationResult] = []

    def __call__(
        self,
        workload: Workload,
        seed: int = 0,
        *,
        invariant: Invariant | None = None,
        step_invariant: Invariant | None = None,
        expect: str = "ok",
        **params: Any,
    ) -> SimulationResult:
        if expect not in ("ok", "fail", "any"):
            raise ValueError(f"expect must be 'ok', 'fail' or 'any', not {expect!r}")
        result = run_simulation(
            seed, workload, invariant=invariant, step_invariant=step_invariant, **params
        )
        self.results.append(result)
        if expect == "ok" and not result.ok:
            message = result.report()
            if self._shrink:
                found = shrink(
                    seed, workload, invariant=invariant, step_invariant=step_invariant, **params
                )
                message += "\n\n" + found.report()
            pytest.fail(message, pytrace=False)
        if expect == "fail" and result.ok:
            pytest.fail(
                f"expected seed {seed} to fail, but it passed: {result.replay_command}",
                pytrace=False,
            )
        return result


@pytest.fixture
def sim_world(request: pytest.FixtureRequest) -> SimWorld:
    """Runs your workload in the simulator; a failure fails the test with the seed, the
    trace from the first fault and the replay command (see :class:`SimWorld`)."""
    return SimWorld(bool(request.config.getoption("--sim-shrink")))
