"""Deterministic simulation of whole trio_sync systems (public, like ``trio.testing``).

``run_scenario(seed)`` runs the real server and client code over an in-memory network
with seeded latency and faults, under Trio's MockClock; ``check_run(result)`` checks what a
finished run must satisfy and explains a stall.
"""

from ._canonical import CANONICAL, canonical_params
from ._checker import CheckReport, assert_converged, check_run
from ._network import SimNetwork
from ._params import ScenarioParams
from ._scenario import (
    SIM_TIMINGS,
    ClientStall,
    ScenarioResult,
    deterministic_scheduling,
    run_scenario,
)
from ._trace import Trace, TraceRecord

__all__ = [
    "CANONICAL",
    "SIM_TIMINGS",
    "CheckReport",
    "ClientStall",
    "ScenarioParams",
    "ScenarioResult",
    "SimNetwork",
    "Trace",
    "TraceRecord",
    "assert_converged",
    "canonical_params",
    "check_run",
    "deterministic_scheduling",
    "run_scenario",
]
