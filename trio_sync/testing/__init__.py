"""Deterministic simulation of whole trio_sync systems (public, like ``trio.testing``).

``run_simulation(seed, workload)`` runs your own workload (``async def workload(world)``)
against the real server and client code over an in-memory network with seeded latency
and faults, under a virtual clock (MockClock's autojump, cheaper: ``_clock.py``), and
checks your invariant at the end.
``run_scenario(seed)`` is the simulator's own generated workload; ``check_run(result)``
checks what a finished scenario must satisfy and explains a stall. Hypothesis strategies
live in ``trio_sync.testing.strategies``, pytest fixtures in
``trio_sync.testing.pytest_plugin``.
"""

from ._canonical import CANONICAL, canonical_params
from ._checker import CheckReport, assert_converged, check_run
from ._engine import SIM_TIMINGS, ClientStall, Failure
from ._network import SimNetwork
from ._params import NO_FAULTS, ScenarioParams, SimParams
from ._sandbox import SimulationError, deterministic_scheduling
from ._scenario import ScenarioResult, run_scenario
from ._shrink import ShrinkResult, shrink, shrink_scenario
from ._simulation import SimulationResult, run_simulation
from ._trace import Trace, TraceRecord
from ._world import Device, World

__all__ = [
    "CANONICAL",
    "NO_FAULTS",
    "SIM_TIMINGS",
    "CheckReport",
    "ClientStall",
    "Device",
    "Failure",
    "ScenarioParams",
    "ScenarioResult",
    "ShrinkResult",
    "SimNetwork",
    "SimParams",
    "SimulationError",
    "SimulationResult",
    "Trace",
    "TraceRecord",
    "World",
    "assert_converged",
    "canonical_params",
    "check_run",
    "deterministic_scheduling",
    "run_scenario",
    "run_simulation",
    "shrink",
    "shrink_scenario",
]
