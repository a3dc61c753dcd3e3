"""``run_simulation``: the user's own workload in a deterministic simulated world.

The workload (``async def workload(world)``) opens devices and drives them; the simulator
owns time (Trio's MockClock with autojump), the network, the server, the faults and Trio's
scheduling order, all drawn from the seed. When the workload returns, the simulator waits
(up to ``deadline`` virtual seconds) until every open device holds the server's log with
nothing pending, then checks the invariant on every device's state. Any run replays
exactly from its seed, workload and parameters.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ..protocol import Event
from ._clock import SimClock
from ._engine import ClientStall, Engine, Failure, Workload
from ._invariant import Invariant, call_invariant, refuse_async_invariant
from ._loop import skip_idle_polls
from ._params import SimParams
from ._sandbox import simulation_sandbox
from ._trace import Trace, explain_stall, from_first_fault
from ._world import World

_SIM_PARAM_NAMES = frozenset(field.name for field in attrs.fields(SimParams))


def callable_name(fn: object) -> str | None:
    """``"module:qualname"`` for a function the command line can import, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is None:
            return None  # a script: nothing to import it by
        return f"{spec.name}:{qualname}"
    target: object = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return f"{module}:{qualname}" if target is fn else None


def load_callable(name: str) -> Any:
    """Imports ``"package.module:function"`` (the current directory is importable too).

    Raises:
        ValueError: Not of that form, or nothing by that name.
    """
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"expected module:function, got {name!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the project's own modules import
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no {qualname!r}") from None
    return target


@attrs.frozen
class SimulationResult:
    """What a simulated run of a workload did.

    Attributes:
        seed: The run's seed.
        params: The world's network and background faults.
        workload_params: Every parameter the workload read (``world.param``), with the
            value used.
        param_minimums: The smallest sensible value of each shrinkable parameter.
        pinned: What the caller pinned (the rest was drawn or defaulted).
        workload: ``"module:function"`` of the workload (None if not importable), and
            likewise ``invariant`` and ``step_invariant``.
        value: What the workload returned (None if it did not return).
        converged: The workload returned and every open device ended with the server's
            log and nothing pending.
        failure: Why the run is not ok (stalled, an invariant, an exception), or None.
        virtual_seconds: Virtual time at the end (converged, failed, or the deadline).
        wall_seconds: Real time the simulation took.
        trace: Every step, with virtual times; ``trace_digest`` is its digest.
        events_committed: How many commits returned, over all devices.
        messages: How many messages were sent, both ways, lost ones included.
        logs: Per device, its final confirmed log (read from its store).
        pending: Per device, its pending events at the end.
        server_log: The server's final log.
        online: The devices open at the end.
        pending_timeline: (virtual time, events not acknowledged, summed over devices).
        stall: Per device, what was stuck, for a run that did not converge.
    """

    seed: int
    params: SimParams
    workload_params: Mapping[str, Any]
    param_minimums: Mapping[str, int]
    pinned: Mapping[str, Any]
    workload: str | None
    invariant: str | None
    step_invariant: str | None
    value: Any
    converged: bool
    failure: Failure | None
    virtual_seconds: float
    wall_seconds: float
    trace: Trace = attrs.field(repr=False)
    trace_digest: str
    events_committed: int
    messages: int
    # The bulky fields stay out of repr(): a failing assert shows the rest.
    logs: Mapping[str, list[Event]] = attrs.field(repr=False)
    pending: Mapping[str, list[Event]] = attrs.field(repr=False)
    server_log: list[Event] = attrs.field(repr=False)
    online: tuple[str, ...]
    pending_timeline: list[tuple[float, int]] = attrs.field(repr=False)
    stall: list[ClientStall]

    @property
    def ok(self) -> bool:
        """Converged, and nothing failed."""
        return self.converged and self.failure is None

    @property
    def stalled(self) -> bool:
        """The deadline came first (the workload never returned, or never converged)."""
        return self.failure is not None and self.failure.kind == "stalled"

    @property
    def replay_command(self) -> str:
        """One line that replays this run: a ``trio-sync replay`` command when the
        workload can be imported by name, else the Python call."""
        pins = [f"{name}={value!r}" for name, value in sorted(self.pinned.items())]
        if self.workload is None:
            named = [f"invariant={self.invariant or '...'}"] if self.invariant else []
            args = ", ".join([str(self.seed), "workload", *named, *pins])
            return (
                f"run_simulation({args})  # trio-sync replay needs the workload importable "
                "as module:function"
            )
        words = ["trio-sync", "replay", "--seed", str(self.seed), "--workload", self.workload]
        if self.invariant:
            words += ["--invariant", self.invariant]
        if self.step_invariant:
            words += ["--step-invariant", self.step_invariant]
        for pin in pins:
            words += ["--param", pin]
        return shlex.join(words)

    def report(self, *, limit: int = 60) -> str:
        """The verdict, the parameters, the trace from the first fault on, and the replay
        command (what a failing test prints)."""
        failure = self.failure
        verdict = "ok" if self.ok else f"FAILED ({failure.kind if failure else 'unknown'})"
        lines = [f"seed {self.seed}: {verdict} at t={self.virtual_seconds:.4f}"]
        if failure is not None:
            lines += [f"  {line}" for line in failure.message.rstrip().splitlines()]
        lines.append(f"  world: {self.params.describe()}")
        if self.workload_params:
            described = ", ".join(f"{k}={v!r}" for k, v in self.workload_params.items())
            lines.append(f"  workload: {described}")
        left = [f"{name} ({len(events)})" for name, events in self.pending.items() if events]
        if left and self.converged:
            lines.append(f"  closed with pending events: {', '.join(left)}")
        if self.stall:
            lines.append(f"  stalled at t={self.virtual_seconds:g}s:")
            for client in self.stall:
                lines.append(f"    {client}")
                if client.pending:
                    explained = explain_stall(self.trace, client.client_id)
                    lines += [f"      {line}" for line in explained]
        if not self.ok:
            lines += [f"  {line}" for line in from_first_fault(self.trace, limit)]
        lines.append(f"  replay: {self.replay_command}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def run_simulation(
    seed: int,
    workload: Workload,
    *,
    invariant: Invariant | None = None,
    step_invariant: Invariant | None = None,
    **params: Any,
) -> SimulationResult:
    """Runs ``workload`` in a simulated world, deterministically, and returns what happened.

    Given only a seed, the network and background faults are drawn from it (see
    :class:`SimParams`); keyword arguments pin any of them, and any other keyword is a
    parameter of the workload (``world.param(name, default)`` reads it).

    Args:
        seed: Same seed, workload and parameters: same trace, in any process.
        workload: ``async def workload(world)``; its return value is ``result.value``.
        invariant: ``invariant(world)``, called once every device has converged; it
            raises (AssertionError, say) when the application's state is wrong. It sees
            every open device: ``world.devices``, ``world.clients``, ``world.apps``.
        step_invariant: Called the same way after every step of the run (every trace
            line): for what must hold at every moment, not only at rest.

    Raises:
        TypeError: A pinned name is neither a simulation parameter nor read by the
            workload, or an invariant is an ``async def``.
        SimulationError: The workload broke the simulator's rules (a worker thread, a
            device opened twice...).
    """
    sim_pins = {name: value for name, value in params.items() if name in _SIM_PARAM_NAMES}
    workload_pins = {name: value for name, value in params.items() if name not in sim_pins}
    return simulate(
        seed,
        workload,
        SimParams.draw(seed, **sim_pins),
        workload_pins=workload_pins,
        pinned=params,
        invariant=invariant,
        step_invariant=step_invariant,
    )


def simulate(
    seed: int,
    workload: Workload,
    params: SimParams,
    *,
    workload_pins: Mapping[str, Any],
    pinned: Mapping[str, Any],
    invariant: Invariant | None = None,
    step_invariant: Invariant | None = None,
) -> SimulationResult:
    """:func:`run_simulation` with the world's parameters already made (run_scenario's
    way in).

    Raises:
        TypeError: An invariant is an ``async def``.
    """
    refuse_async_invariant("invariant", invariant)
    refuse_async_invariant("step_invariant", step_invariant)
    engine = Engine(seed, params)
    outcome: dict[str, Any] = {}

    async def main() -> None:
        skip_idle_polls()
        world = World(engine, workload_pins)
        outcome["world"] = world
        if step_invariant is not None:
            engine.step_check = lambda: call_invariant(step_invariant, world)
        outcome["value"] = await engine.run(workload, world, invariant)

    started = time.perf_counter()
    try:
        with simulation_sandbox(seed):
            trio.run(main, clock=SimClock())
        wall = time.perf_counter() - started
        logs, pending = {}, {}
        for name, device in engine.devices.items():
            logs[name], pending[name] = engine.read_store(device)
    finally:
        engine.close_stores()
    world: World = outcome["world"]
    unread = sorted(set(workload_pins) - set(world.params_read))
    if unread and engine.workload_done:
        raise TypeError(
            f"unknown parameters {unread}: not simulation parameters "
            f"({', '.join(sorted(_SIM_PARAM_NAMES))}), and the workload never read them "
            "with world.param()"
        )
    server_log = engine.server_log
    if engine.converged and engine.failure is None:
        _check_logs(engine, logs, server_log)
    return SimulationResult(
        seed=seed,
        params=params,
        workload_params=dict(world.params_read),
        param_minimums=dict(world.param_minimums),
        pinned=dict(pinned),
        workload=callable_name(workload),
        invariant=callable_name(invariant) if invariant else None,
        step_invariant=callable_name(step_invariant) if step_invariant else None,
        value=outcome.get("value"),
        converged=engine.converged,
        failure=engine.failure,
        virtual_seconds=engine.virtual_seconds,
        wall_seconds=wall,
        trace=engine.trace,
        trace_digest=engine.trace.digest(),
        events_committed=engine.events_committed,
        messages=engine.network.messages_sent,
        logs=logs,
        pending=pending,
        server_log=server_log,
        online=tuple(engine.online_at_end),
        pending_timeline=engine.pending_timeline,
        stall=engine.stall,
    )


def _check_logs(engine: Engine, logs: Mapping[str, list[Event]], server_log: list[Event]) -> None:
    """Every device open at the end holds exactly the server's log (the sync engine's
    own promise, checked before the application's)."""
    expected = [(event.seq, event.key) for event in server_log]
    for name in engine.online_at_end:
        if [(event.seq, event.key) for event in logs[name]] != expected:
            engine.failure = Failure(
                "log",
                f"{name}: log of {len(logs[name])} events differs from the server's "
                f"{len(server_log)}",
                engine.virtual_seconds,
            )
            return
