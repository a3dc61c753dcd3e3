"""``run_scenario``: the real client and server code in a deterministic simulated world.

The server and every client run the production code over :class:`SimNetwork`, with their
stores in memory and called inline (no threads), under Trio's MockClock with autojump.
Everything random (the parameters, latencies, losses, fault times, commit pauses, backoff
jitter) comes from the seed, and so does Trio's own scheduling order: the same seed gives
the same trace in any process.
"""

from __future__ import annotations

import itertools
import random
import shlex
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing

from .._broadcast import Broadcast
from .._store_runner import inline
from ..client import Client, ClientTimings, open_client
from ..protocol import Event, HeartbeatTimings, PushTimings
from ..server import serve_store
from ..store import ServerStore, memory_path
from ._canonical import CANONICAL
from ._network import SimNetwork
from ._params import ScenarioParams, check_policy
from ._trace import Trace

#: Timings of simulated clients: a fast network deserves short timeouts.
SIM_TIMINGS = ClientTimings(
    connect_timeout=2.0,
    handshake_timeout=2.0,
    reconnect_base=0.05,
    reconnect_cap=2.0,
    heartbeat=HeartbeatTimings(interval=1.0, pong_timeout=3.0, stuck_ticks=2),
    push=PushTimings(ack_timeout=2.0, retry_base=0.05, retry_cap=2.0, catch_up_timeout=1.0),
)

_runs = itertools.count()

#: Trace steps after which a run may have converged (the watcher looks only then).
_MAY_CONVERGE = frozenset(
    {"pull.advance", "pull.rebase", "push.ack", "workload.done", "phase", "restart", "up"}
)


@attrs.frozen
class ClientStall:
    """One client's state when a run ended without converging."""

    client_id: str
    state: str
    pending: int
    first_pending: int | None
    last_pending: int | None
    pending_since: float | None
    push_phase: str
    last_error: str | None

    def __str__(self) -> str:
        if not self.pending:
            return f"{self.client_id}: nothing pending (status {self.state})"
        since = f"{self.pending_since:.3f}s" if self.pending_since is not None else "?"
        return (
            f"{self.client_id}: {self.pending} pending (client_seq {self.first_pending}.."
            f"{self.last_pending}) since t={since}; push loop {self.push_phase}"
            f"{f' ({self.last_error})' if self.last_error else ''}; status {self.state}"
        )


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
        for name, preset in CANONICAL.items():
            if all(pinned.get(key) == value for key, value in preset.items()):
                words += ["--scenario", name]
                pinned = {k: v for k, v in pinned.items() if k not in preset}
                break
        for name, value in sorted(pinned.items()):
            words += ["--param", f"{name}={value!r}"]
        return shlex.join(words)


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Makes Trio's scheduling order a function of ``seed`` for the duration.

    Trio shuffles each batch of runnable tasks. Its Hypothesis integration makes that
    reproducible by sorting the batch by task creation order before a shuffle drawn from
    Trio's private random source; this does the same, seeded, and restores both after.
    """
    from trio._core import _run as trio_run

    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_state = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(f"trio_sync:{seed}")
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag  # type: ignore[misc]
        trio_run._r.setstate(saved_state)


class _Simulation:
    def __init__(self, seed: int, policy: str, params: ScenarioParams) -> None:
        self.seed = seed
        self.policy = policy
        self.params = params
        self.trace = Trace()
        self.token = f"{next(_runs)}_{seed}"
        self.ids = params.client_ids
        self.committed: dict[str, list[Event]] = {cid: [] for cid in self.ids}
        self.commit_times: dict[str, dict[int, float]] = {cid: {} for cid in self.ids}
        self.clients: dict[str, Client | None] = dict.fromkeys(self.ids)
        self.crash_scopes: dict[str, trio.CancelScope] = {}
        self.done = dict.fromkeys(self.ids, False)
        self.last_pending = dict.fromkeys(self.ids, 0)
        self.pending_timeline: list[tuple[float, int]] = [(0.0, 0)]
        self.converged = False
        self.virtual_seconds = 0.0
        self.stall: list[ClientStall] = []
        self.changed: Broadcast | None = None
        self.server_up = False

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def record(self, actor: str, what: str, details: Mapping[str, object]) -> None:
        now = trio.current_time()
        self.trace.add(now, actor, what, details)
        client = self.clients.get(actor)
        if client is not None:
            self.last_pending[actor] = client._core.state.unacknowledged_count
            total = sum(self.last_pending.values())
            if total != self.pending_timeline[-1][1]:
                self.pending_timeline.append((now, total))
        if self.changed is not None and what in _MAY_CONVERGE:
            self.changed.notify()

    # --- the world --------------------------------------------------------------------

    async def main(self) -> None:
        self.changed = Broadcast()
        paths = {name: memory_path(f"{self.token}_{name}") for name in ["server", *self.ids]}
        keepers = [sqlite3.connect(path, uri=True) for path in paths.values()]
        self.server_store = ServerStore.open(paths["server"])
        self.network = SimNetwork(self.params, self.rng("network"), self.record)
        try:
            async with trio.open_nursery() as root:
                self.root = root
                self.url = await self._start_server()
                for cid in self.ids:
                    root.start_soon(self._client_process, cid, paths[cid])
                root.start_soon(self._faults)
                with trio.move_on_at(self.params.deadline):
                    await self._wait_converged()
                    self.converged = True
                self.virtual_seconds = trio.current_time()
                self.stall = [] if self.converged else self._diagnose()
                self.final = self._final_state()
                root.cancel_scope.cancel()
        finally:
            self.server_store.close()
            for keeper in keepers:
                keeper.close()

    async def _start_server(self) -> str:
        self.server_scope = trio.CancelScope()
        scope = self.server_scope

        async def run(*, task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await serve_store(
                    self.server_store,
                    partial(self.network.serve, name="server"),
                    run_store=inline,
                    task_status=task_status,
                )

        url: str = await self.root.start(run)
        self.server_up = True
        self.record("server", "up", {"head": self.server_store.head})
        return url

    async def _client_process(self, cid: str, path: str) -> None:
        index = self.ids.index(cid)
        total = self.params.events[index]
        work = self.rng(f"work:{cid}")
        for incarnation in itertools.count():
            with trio.CancelScope() as crash_scope:
                self.crash_scopes[cid] = crash_scope
                async with open_client(
                    self.url,
                    path,
                    client_id=cid,
                    push_batch_size=self.params.push_batch_size,
                    push_policy=self.policy,
                    timings=SIM_TIMINGS,
                    connector=partial(self.network.connect, client_id=cid),
                    run_store=inline,
                    rng=self.rng(f"jitter:{cid}:{incarnation}"),
                    trace=partial(self.record, cid),
                ) as client:
                    self.clients[cid] = client
                    while len(self.committed[cid]) < total:
                        batch = min(self.params.commit_batch, total - len(self.committed[cid]))
                        for _ in range(batch):
                            n = len(self.committed[cid])
                            event = await client.commit("sim.event", {"client": cid, "n": n})
                            self.committed[cid].append(event)
                            self.commit_times[cid][event.client_seq] = trio.current_time()
                        if self.params.pause:
                            await trio.sleep(work.uniform(0.0, self.params.pause))
                    self.done[cid] = True
                    self.record(cid, "workload.done", {"committed": total})
                    await trio.sleep_forever()
            self.clients[cid] = None
            await trio.sleep(work.uniform(0.2, 2.0))  # down for a while
            self.record(cid, "restart", {"incarnation": incarnation + 1})

    async def _faults(self) -> None:
        params = self.params
        rng = self.rng("faults")
        horizon = 1.0 + max(
            (events / params.commit_batch) * params.pause / 2 + events * params.latency
            for events in params.events
        )
        plan = sorted(
            [
                (rng.uniform(0, horizon), "disconnect", rng.choice(self.ids))
                for _ in range(params.disconnects)
            ]
            + [
                (rng.uniform(0, horizon), "crash", rng.choice(self.ids))
                for _ in range(params.client_crashes)
            ]
            + [
                (rng.uniform(0, horizon), "server_restart", "server")
                for _ in range(params.server_restarts)
            ]
        )
        for at, kind, target in plan:
            await trio.sleep_until(at)
            if kind == "disconnect":
                self.record("net", "cut", {"client": target, "links": self.network.cut(target)})
            elif kind == "crash" and self.clients.get(target) is not None:
                self.record(target, "crash", {})
                self.clients[target] = None
                self.crash_scopes[target].cancel()
            elif kind == "server_restart" and self.server_up:
                self.server_up = False
                self.server_scope.cancel()
                self.record("server", "down", {})
                await trio.sleep(rng.uniform(0.1, 1.5))
                await self._start_server()

    # --- convergence ------------------------------------------------------------------

    def _is_converged(self) -> bool:
        head = self.server_store.head
        if head != sum(len(events) for events in self.committed.values()):
            return False
        for cid in self.ids:
            client = self.clients[cid]
            if not self.done[cid] or client is None:
                return False
            # Nothing unacknowledged and the server's whole log local: nothing can be
            # pending (every own event is on the server, so also in the local log).
            status = client.status
            if status.pending or status.upstream_head != head:
                return False
        return True

    async def _wait_converged(self) -> None:
        assert self.changed is not None
        while True:
            changed = self.changed.event
            if self._is_converged():
                self.record("sim", "converged", {"head": self.server_store.head})
                return
            await changed.wait()

    def _diagnose(self) -> list[ClientStall]:
        report = []
        for cid in self.ids:
            client = self.clients[cid]
            if client is None:
                report.append(ClientStall(cid, "crashed", 0, None, None, None, "-", None))
                continue
            pending = client.pending_events()
            status = client.status
            first = pending[0].client_seq if pending else None
            report.append(
                ClientStall(
                    client_id=cid,
                    state=status.state,
                    pending=len(pending),
                    first_pending=first,
                    last_pending=pending[-1].client_seq if pending else None,
                    pending_since=self.commit_times[cid].get(first) if first else None,
                    push_phase=client.push_phase,
                    last_error=status.last_error,
                )
            )
        return report

    def _final_state(self) -> tuple[dict[str, list[Event]], dict[str, list[Event]], list[Event]]:
        logs, pending = {}, {}
        for cid in self.ids:
            client = self.clients[cid]
            logs[cid] = client.confirmed_events() if client is not None else []
            pending[cid] = client.pending_events() if client is not None else []
        return logs, pending, self.server_store.read(0, 10**9)


def run_scenario(seed: int, *, policy: str = "supervised", **params: Any) -> ScenarioResult:
    """Runs one simulated scenario, deterministically, and returns what happened.

    Given only a seed, every parameter is drawn from it (see :class:`ScenarioParams`);
    keyword arguments pin any of them, for example ``clients=2, ack_loss=0.0``.

    Args:
        seed: The run's seed: same seed and parameters, same trace, in any process.
        policy: The clients' push policy, "supervised" or "park".

    Raises:
        ValueError: Unknown policy.
        TypeError: Unknown parameter.
    """
    check_policy(policy)
    drawn = ScenarioParams.draw(seed, **params)
    simulation = _Simulation(seed, policy, drawn)
    started = time.perf_counter()
    with deterministic_scheduling(seed):
        trio.run(simulation.main, clock=trio.testing.MockClock(autojump_threshold=0))
    wall = time.perf_counter() - started
    logs, pending, server_log = simulation.final
    return ScenarioResult(
        seed=seed,
        policy=policy,
        params=drawn,
        converged=simulation.converged,
        stalled=not simulation.converged,
        virtual_seconds=simulation.virtual_seconds,
        wall_seconds=wall,
        trace=simulation.trace,
        trace_digest=simulation.trace.digest(),
        events_committed=sum(len(events) for events in simulation.committed.values()),
        committed=simulation.committed,
        logs=logs,
        pending=pending,
        server_log=server_log,
        pending_timeline=simulation.pending_timeline,
        stall=simulation.stall,
        pinned=dict(params),
    )
