"""Shrinking a failing run: the smallest parameter set that still fails the same way.

Every parameter has its own seeded source, so pinning one (turning a fault off, lowering a
count) leaves the rest of the run's draws alone: a failing seed stays close to itself while
its parameters shrink. The search is greedy and deterministic: it tries candidates in a
fixed order (all background faults off, the workload's shrinkable parameters at their
minimum, each fault off, then halving), keeps the first that still fails the same way
(same kind of failure), and starts again from there until nothing smaller fails or the
budget of runs is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._checker import check_run
from ._engine import Workload
from ._invariant import Invariant
from ._params import NO_FAULTS, ScenarioParams, SimParams
from ._scenario import ScenarioResult, run_scenario
from ._simulation import SimulationResult, run_simulation

R = TypeVar("R", SimulationResult, ScenarioResult)

#: How many runs a shrink may take, unless told otherwise.
MAX_RUNS = 100


@attrs.frozen
class ShrinkStep:
    """One accepted reduction: these pins, and the run still failed the same way."""

    changes: Mapping[str, tuple[Any, Any]]  # name -> (before, after)

    def __str__(self) -> str:
        return ", ".join(f"{name}: {a!r} -> {b!r}" for name, (a, b) in self.changes.items())


@attrs.frozen
class ShrinkResult(Generic[R]):
    """The smallest failing parameter set found from a failing seed.

    Attributes:
        seed: The seed (never changed: shrinking changes parameters only).
        kind: How the run fails (the failure kind every kept candidate shared).
        original: The first run, with the caller's parameters.
        smallest: The run with the smallest failing parameters.
        pins: The parameters that reproduce ``smallest``.
        steps: The reductions accepted, in order.
        runs: How many runs the search took (the first included).
        exhausted: The search stopped at its budget (a smaller set may exist).
    """

    seed: int
    kind: str
    original: R
    smallest: R
    pins: Mapping[str, Any]
    steps: tuple[ShrinkStep, ...]
    runs: int
    exhausted: bool

    @property
    def replay_command(self) -> str:
        return self.smallest.replay_command

    def report(self, *, steps: bool = True) -> str:
        """What the search found, and the command that replays it.

        Args:
            steps: List the header and every reduction. False when a ``progress``
                callback has already printed them as they happened: the report then
                carries on from there, so that no line is printed twice.
        """
        lines = []
        if steps:
            lines.append(f"shrinking seed {self.seed} (fails: {self.kind}): {self.runs} runs")
            lines += [f"  still fails with {step}" for step in self.steps]
        if not self.steps:
            lines.append("  nothing smaller fails the same way")
        if self.exhausted:
            lines.append("  (stopped at the run budget: raise --max-runs to look further)")
        if not steps:
            lines.append(f"{self.runs} runs tried")
        pins = ", ".join(f"{name}={value!r}" for name, value in sorted(self.pins.items()))
        lines.append(f"smallest failing parameters: {pins or '(as drawn from the seed)'}")
        lines.append(f"replay: {self.replay_command}")
        return "\n".join(lines)


def _fault_candidates(params: SimParams | ScenarioParams) -> list[dict[str, Any]]:
    on = {name: getattr(params, name) for name, off in NO_FAULTS.items()}
    on = {name: value for name, value in on.items() if value != NO_FAULTS[name]}
    everything_off = [{name: NO_FAULTS[name] for name in on}] if len(on) > 1 else []
    each_off = [{name: NO_FAULTS[name]} for name in on]
    smaller: list[dict[str, Any]] = []
    for name, value in on.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value > 1:
            smaller += [{name: value // 2}, {name: value - 1}]
        elif isinstance(value, float) and value > 0.002:
            smaller.append({name: round(value / 2, 3)})
        elif isinstance(value, tuple) and len(value) > 1:
            smaller += [{name: value[1:]}, {name: value[:-1]}]
    return everything_off + each_off + smaller


def _count_candidates(name: str, value: int, minimum: int) -> list[dict[str, Any]]:
    values = [minimum, (value + minimum) // 2, value - 1]
    return [{name: v} for v in dict.fromkeys(values) if minimum <= v < value]


def _dedupe(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for candidate in candidates:
        if candidate and candidate not in seen:
            seen.append(candidate)
    return seen


def _search(
    seed: int,
    pins: Mapping[str, Any],
    run: Callable[[Mapping[str, Any]], R],
    failure_kind: Callable[[R], str | None],
    candidates: Callable[[R], list[dict[str, Any]]],
    max_runs: int,
    progress: Callable[[str], object] | None,
) -> ShrinkResult[R]:
    original = run(pins)
    kind = failure_kind(original)
    if kind is None:
        raise ValueError(f"seed {seed} does not fail with these parameters: nothing to shrink")
    if progress is not None:
        # The header first: the reductions follow it as they are found.
        progress(f"shrinking seed {seed} (fails: {kind}), up to {max_runs} runs:")
    best, best_pins, steps, runs = original, dict(pins), [], 1
    exhausted = False
    improved = True
    while improved:
        improved = False
        for candidate in _dedupe(candidates(best)):
            if runs >= max_runs:
                exhausted = True
                break
            trial = {**best_pins, **candidate}
            runs += 1
            try:
                result = run(trial)
            except TypeError:
                continue  # the workload no longer reads a parameter: not a smaller run
            if failure_kind(result) != kind:
                continue
            changes = {name: (_effective(best, name), value) for name, value in candidate.items()}
            steps.append(ShrinkStep(changes))
            if progress is not None:
                progress(f"  still fails with {steps[-1]}")
            best, best_pins, improved = result, trial, True
            break
    return ShrinkResult(seed, kind, original, best, best_pins, tuple(steps), runs, exhausted)


def _effective(result: SimulationResult | ScenarioResult, name: str) -> Any:
    if isinstance(result, SimulationResult) and name in result.workload_params:
        return result.workload_params[name]
    return getattr(result.params, name, None)


def shrink(
    seed: int,
    workload: Workload,
    *,
    invariant: Invariant | None = None,
    step_invariant: Invariant | None = None,
    max_runs: int = MAX_RUNS,
    progress: Callable[[str], object] | None = None,
    **params: Any,
) -> ShrinkResult[SimulationResult]:
    """From a failing run of ``workload``, finds the smallest parameters that still fail.

    Tries fewer and no background faults, and the workload's parameters read with a
    ``minimum`` (``world.param("devices", 3, minimum=1)``) down to it.

    Raises:
        ValueError: The run does not fail: there is nothing to shrink.
    """

    def run(pins: Mapping[str, Any]) -> SimulationResult:
        return run_simulation(
            seed, workload, invariant=invariant, step_invariant=step_invariant, **pins
        )

    def candidates(result: SimulationResult) -> list[dict[str, Any]]:
        counts = [
            candidate
            for name, minimum in result.param_minimums.items()
            if isinstance(result.workload_params.get(name), int)
            for candidate in _count_candidates(name, result.workload_params[name], minimum)
        ]
        faults = _fault_candidates(result.params)
        return faults[:1] + counts + faults[1:]

    def failure_kind(result: SimulationResult) -> str | None:
        if result.ok:
            return None
        return result.failure.kind if result.failure is not None else "stalled"

    return _search(seed, params, run, failure_kind, candidates, max_runs, progress)


def shrink_scenario(
    seed: int,
    *,
    policy: str = "supervised",
    max_runs: int = MAX_RUNS,
    progress: Callable[[str], object] | None = None,
    **params: Any,
) -> ShrinkResult[ScenarioResult]:
    """:func:`shrink` for ``run_scenario``: fewer faults, clients and events.

    Raises:
        ValueError: The scenario does not fail (it converges and passes ``check_run``).
    """

    def run(pins: Mapping[str, Any]) -> ScenarioResult:
        return run_scenario(seed, policy=policy, **pins)

    def candidates(result: ScenarioResult) -> list[dict[str, Any]]:
        drawn = result.params
        fewer: list[dict[str, Any]] = []
        for clients in dict.fromkeys([1, drawn.clients - 1]):
            if 1 <= clients < drawn.clients:
                fewer.append({"clients": clients, "events": drawn.events[:clients]})
        if any(events > 1 for events in drawn.events):
            fewer.append({"events": tuple(max(1, events // 2) for events in drawn.events)})
        faults = _fault_candidates(drawn)
        return faults[:1] + fewer + faults[1:]

    def failure_kind(result: ScenarioResult) -> str | None:
        if result.stalled:
            return "stalled"
        return None if check_run(result).ok else "check"

    return _search(seed, params, run, failure_kind, candidates, max_runs, progress)
