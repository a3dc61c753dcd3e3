"""``run_scenario``: the simulator's own generated workload, one workload among others.

Each client is a device started with ``world.start_device``: it commits its events in
batches with seeded pauses, comes back after crashes and carries on where its store says
it was. Everything else (the world, the faults, convergence, the trace) is
``run_simulation``'s.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ..protocol import Event
from ._canonical import CANONICAL
from ._engine import ClientStall
from ._params import ScenarioParams, check_policy
from ._simulation import simulate
from ._trace import Trace
from ._world import Device, World


@attrs.frozen
class ScenarioResult:
    """What a simulated run did.

    Attributes:
        converged: Every client ended with the server's log and nothing pending.
        stalled: The run reached its deadline without converging.
        virtual_seconds: Virtual time when it converged (or hit the deadline).
        wall_seconds: Real time the simulation took.
        trace: Every step, with virtual times.
        trace_digest: Digest of the trace: same seed and params, same digest.
        events_committed: How many commits returned, over all clients.
        messages: How many messages were sent, both ways, lost ones included.
        committed: Per client, every event whose ``commit()`` returned.
        logs: Per client, its final confirmed log (read from its store).
        pending: Per client, its pending events at the end.
        server_log: The server's final log.
        pending_timeline: (virtual time, events not acknowledged, summed over clients).
        stall: Per client, what was stuck, for a run that did not converge.
    """

    seed: int
    policy: str
    params: ScenarioParams
    converged: bool
    stalled: bool
    virtual_seconds: float
    wall_seconds: float
    trace: Trace
    trace_digest: str
    events_committed: int
    messages: int
    committed: Mapping[str, list[Event]]
    logs: Mapping[str, list[Event]]
    pending: Mapping[str, list[Event]]
    server_log: list[Event]
    pending_timeline: list[tuple[float, int]]
    stall: list[ClientStall]
    #: The parameters the caller pinned (the rest were drawn from the seed).
    pinned: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def replay_command(self) -> str:
        """The command that replays this run (pins included) and prints its trace."""
        words = ["trio-sync", "replay", "--seed", str(self.seed), "--policy", self.policy]
        pinned = dict(self.pinned)
        matching = [
            (name, preset)
            for name, preset in CANONICAL.items()
            if all(pinned.get(key) == value for key, value in preset.items())
        ]
        if matching:
            # The scenario that covers the most pins: lost-ack-and-echo's pins include all
            # of lost-ack's, and naming lost-ack plus a --param is not what the user typed.
            name, preset = max(matching, key=lambda found: len(found[1]))
            words += ["--scenario", name]
            pinned = {k: v for k, v in pinned.items() if k not in preset}
        for name, value in sorted(pinned.items()):
            words += ["--param", f"{name}={value!r}"]
        return shlex.join(words)


class _CommitWorkload:
    """Every client commits ``events`` of its own, ``commit_batch`` at a time."""

    def __init__(self, params: ScenarioParams, policy: str) -> None:
        self.params = params
        self.policy = policy
        self.committed: dict[str, list[Event]] = {cid: [] for cid in params.client_ids}
        self._work: dict[str, random.Random] = {}

    async def __call__(self, world: World) -> dict[str, list[Event]]:
        for cid in self.params.client_ids:
            # One source per client for its pauses, kept across its crashes.
            self._work[cid] = random.Random(f"{world.seed}:work:{cid}")
            world.start_device(
                cid,
                self._commit,
                world,
                push_batch_size=self.params.push_batch_size,
                push_policy=self.policy,
            )
        return self.committed  # the devices run on; the simulator waits for them

    async def _commit(self, device: Device, world: World) -> None:
        cid, client = device.name, device.client
        assert client is not None
        params = self.params
        total = params.events[params.client_ids.index(cid)]
        committed = self.committed[cid]
        while len(committed) < total:
            for _ in range(min(params.commit_batch, total - len(committed))):
                n = len(committed)
                committed.append(await client.commit("sim.event", {"client": cid, "n": n}))
            if params.pause:
                await trio.sleep(self._work[cid].uniform(0.0, params.pause))
        world.trace("workload.done", actor=cid, committed=total)


def run_scenario(seed: int, *, policy: str = "supervised", **params: Any) -> ScenarioResult:
    """Runs one simulated scenario, deterministically, and returns what happened.

    Given only a seed, every parameter is drawn from it (see :class:`ScenarioParams`);
    keyword arguments pin any of them, for example ``clients=2, ack_loss=0.0``.

    Args:
        seed: The run's seed: same seed and parameters, same trace, in any process.
        policy: The clients' push policy, "supervised" or "park".

    Raises:
        ValueError: Unknown policy, or a parameter out of its range (``events`` with
            another number of counts than ``clients`` included).
        TypeError: Unknown parameter.
        RuntimeError: The simulated code raised (a bug: the report says where).
    """
    check_policy(policy)
    drawn = ScenarioParams.draw(seed, **params)
    workload = _CommitWorkload(drawn, policy)
    result = simulate(seed, workload, drawn.sim_params(), workload_pins={}, pinned=params)
    if result.failure is not None and result.failure.kind.startswith("error:"):
        raise RuntimeError(f"the simulated run raised:\n{result.report()}")
    ids = drawn.client_ids
    return ScenarioResult(
        seed=seed,
        policy=policy,
        params=drawn,
        converged=result.converged,
        stalled=not result.converged,
        virtual_seconds=result.virtual_seconds,
        wall_seconds=result.wall_seconds,
        trace=result.trace,
        trace_digest=result.trace_digest,
        events_committed=sum(len(events) for events in workload.committed.values()),
        messages=result.messages,
        committed=workload.committed,
        logs={cid: result.logs.get(cid, []) for cid in ids},
        pending={cid: result.pending.get(cid, []) for cid in ids},
        server_log=result.server_log,
        pending_timeline=result.pending_timeline,
        stall=result.stall,
        pinned=dict(params),
    )
