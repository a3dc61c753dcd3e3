"""The simulator's engine: one run of a workload in a simulated world.

It owns what the workload does not: the server (started, stopped and restarted on its
in-memory database), the simulated network, the background faults drawn from the seed,
every client the world opens, the trace, and the end of the run (convergence, the
invariant, a stall's diagnosis). It runs inside ``trio.run`` under MockClock; see
``_simulation.run_simulation`` for the outside.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import traceback
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from .._broadcast import Broadcast
from .._store_runner import inline
from ..client import Client, ClientTimings, open_client
from ..files import FileOptions, MemoryBlobStore
from ..protocol import Event, HeartbeatTimings, PushTimings
from ..server import MemoryBlobBackend, serve_store
from ..store import ClientStore, ServerStore, memory_path
from ._files_check import check_files, files_settled
from ._invariant import Invariant, call_invariant
from ._network import SimNetwork
from ._params import SimParams
from ._sandbox import SimulationError
from ._trace import Trace
from ._world import Device

if TYPE_CHECKING:
    from ._world import World

#: Timings of simulated clients: a fast network deserves short timeouts.
SIM_TIMINGS = ClientTimings(
    connect_timeout=2.0,
    handshake_timeout=2.0,
    reconnect_base=0.05,
    reconnect_cap=2.0,
    heartbeat=HeartbeatTimings(interval=1.0, pong_timeout=3.0, stuck_ticks=2),
    push=PushTimings(
        ack_timeout=2.0, min_ack_timeout=0.1, retry_base=0.05, retry_cap=2.0, catch_up_timeout=1.0
    ),
)

#: Trace steps after which a run may have converged (the watcher looks only then).
_MAY_CONVERGE = frozenset(
    {"pull.advance", "pull.rebase", "push.ack", "phase", "up", "files.idle", "download.complete"}
)

#: The virtual pause after convergence in which every runnable task runs (see _settle).
_QUIET = 1e-6

_runs = itertools.count()

Workload = Callable[["World"], Awaitable[Any]]


#: The wall-clock time a simulation starts at (2026-01-01T00:00:00Z), so that status
#: timestamps look like dates and replay identically.
SIM_EPOCH = 1_767_225_600.0


def _virtual_wall_clock() -> float:
    return SIM_EPOCH + trio.current_time()


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
class Failure:
    """Why a run is not ok. ``kind`` is "stalled", "invariant", "step_invariant", "log"
    or "error:<ExceptionType>" (shrinking keeps a candidate only if its kind is the same).
    """

    kind: str
    message: str
    at: float


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 120 else line[:117] + "..."


def find_simulation_error(exc: BaseException) -> SimulationError | None:
    """The SimulationError inside ``exc`` (an exception group perhaps), if any."""
    if isinstance(exc, SimulationError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_simulation_error(inner)
            if found is not None:
                return found
    return None


class Engine:
    """One simulated run. ``await engine.run(workload, world, invariant)`` inside trio.run."""

    def __init__(self, seed: int, params: SimParams) -> None:
        self.seed = seed
        self.params = params
        self.sim_param_names = frozenset(field.name for field in attrs.fields(SimParams))
        self.trace = Trace()
        self.token = f"{next(_runs)}_{seed}"
        self.devices: dict[str, Device] = {}
        self.commit_times: dict[str, dict[int, float]] = {}
        self.events_committed = 0
        self.last_pending: dict[str, int] = {}
        self.pending_timeline: list[tuple[float, int]] = [(0.0, 0)]
        self.workload_done = False
        self.converged = False
        self.virtual_seconds = 0.0
        self.failure: Failure | None = None
        self.stall: list[ClientStall] = []
        self.online_at_end: list[str] = []
        self.server_up = False
        self.step_check: Callable[[], object] | None = None
        self._checking = False
        self._keepers: list[sqlite3.Connection] = []
        self._server_downtime = self.rng("server_downtime")
        #: File contents: the server's (kept across its restarts, as a disk would keep
        #: them) and each device's (kept across its crashes).
        self.server_blobs = MemoryBlobBackend()
        self.device_blobs: dict[str, MemoryBlobStore] = {}
        self._files_kept: set[str] = set()

    def rng(self, name: str) -> random.Random:
        """A random source named after its purpose: adding one never shifts another."""
        return random.Random(f"{self.seed}:{name}")

    def record(self, actor: str, what: str, details: Mapping[str, object]) -> None:
        """Adds a trace line (every hook and control lands here)."""
        now = trio.current_time()
        self.trace.add(now, actor, what, details)
        device = self.devices.get(actor)
        if device is not None:
            if what == "commit":
                self.events_committed += 1
                self.commit_times[actor][cast(int, details["client_seq"])] = now
            client = device.client
            if client is not None:
                self.last_pending[actor] = client._core.state.unacknowledged_count
                total = sum(self.last_pending.values())
                if total != self.pending_timeline[-1][1]:
                    self.pending_timeline.append((now, total))
        if what in _MAY_CONVERGE:
            self.changed.notify()
        if self.step_check is not None and not self._checking and self.failure is None:
            self._checking = True
            try:
                self.step_check()
            except Exception as exc:
                step = self.trace.records[-1]
                text = str(exc) or type(exc).__name__
                where = f"after the step at t={step.t:.4f}: {step.actor} {step.what}"
                self.fail("step_invariant", f"{where}\n{text}", text)
            finally:
                self._checking = False

    def note_failure(self, kind: str, message: str, why: str | None = None) -> None:
        """Records why the run is not ok (the first failure wins); ``why`` is the short
        form for the trace (the message's first line by default)."""
        if self.failure is not None:
            return
        self.virtual_seconds = trio.current_time()
        self.failure = Failure(kind, message, self.virtual_seconds)
        self.record("sim", "failed", {"kind": kind, "why": _first_line(why or message)})

    def fail(self, kind: str, message: str, why: str | None = None) -> None:
        """Ends the run now with a failure."""
        self.note_failure(kind, message, why)
        self.root.cancel_scope.cancel()

    # --- the run ----------------------------------------------------------------------

    async def run(self, workload: Workload, world: World, invariant: Invariant | None) -> Any:
        """Runs the workload, then waits for convergence and checks the invariant.

        Returns the workload's return value. Failures are recorded in ``self.failure``.

        Raises:
            SimulationError: The workload broke the simulator's rules.
        """
        self.changed = Broadcast()
        self.server_store = self._new_server_store("server")
        self._rebuilds = 0
        self.network = SimNetwork(self.params, self.rng("network"), self.record)
        self._server_lock = trio.Lock()
        value: Any = None
        try:
            async with trio.open_nursery() as root:
                self.root = root
                await self.start_server()
                root.start_soon(self._faults)
                root.start_soon(self._deadline)
                value = await self._run_workload(workload, world)
                self.workload_done = True
                self.record("sim", "workload.returned", {})
                if self.network.partitioned:
                    self.heal(by="sim")
                await self._settle()
                self.converged = True
                self.virtual_seconds = trio.current_time()
                self.online_at_end = [d.name for d in self.devices.values() if d.online]
                self.record("sim", "converged", {"head": self.server_store.head})
                for problem in check_files(world.clients):
                    self.note_failure("files", problem)
                if invariant is not None:
                    self._check(invariant, world)
                root.cancel_scope.cancel()
        except Exception as exc:
            # A device's main, a task it started or a client failed: the run ends there.
            found = find_simulation_error(exc)
            if found is not None:
                raise found from None
            leaf = _leaf(exc)
            self.note_failure(
                f"error:{type(leaf).__name__}",
                "".join(traceback.format_exception(leaf)),
                f"{type(leaf).__name__}: {leaf}",
            )
        finally:
            self.server_log = self.server_store.read(0, 10**9)
            self.server_store.close()
        return value

    async def _run_workload(self, workload: Workload, world: World) -> Any:
        try:
            value = await workload(world)
        except Exception as exc:
            found = find_simulation_error(exc)
            if found is not None:
                raise found from None
            leaf = _leaf(exc)
            self.fail(
                f"error:{type(leaf).__name__}",
                "the workload raised:\n" + "".join(traceback.format_exception(leaf)),
                f"{type(leaf).__name__}: {leaf}",
            )
            await trio.sleep_forever()  # fail() cancelled the run: it ends here
        # The workload is done once every device it started has finished its main.
        for device in list(self.devices.values()):
            if device.managed:
                await device.wait_finished()
        return value

    async def _deadline(self) -> None:
        """At the deadline, a run still going is stalled: say what every device was doing
        (before anything is torn down), then end it."""
        await trio.sleep_until(self.params.deadline)
        self.stall = self.diagnose()
        if not self.workload_done:
            busy = [d.name for d in self.devices.values() if d.managed and not d.finished]
            message = (
                f"the workload had not returned by the deadline (t={self.params.deadline:g}): "
                "it waits for something that never happened"
                + (f" (main still running on {busy})" if busy else "")
            )
        else:
            message = f"did not converge within {self.params.deadline:g} virtual seconds"
        self.fail("stalled", message)

    def _check(self, invariant: Invariant, world: World) -> None:
        try:
            call_invariant(invariant, world)
        except Exception as exc:
            self.note_failure("invariant", str(exc) or type(exc).__name__)

    # --- the server -------------------------------------------------------------------

    async def _serve(self, *, task_status: trio.TaskStatus[str]) -> None:
        # The one place the simulator calls serve_store.
        schema_name, schema_version = self.params.schema
        await serve_store(
            self.server_store,
            partial(self.network.serve, name="server"),
            schema_name=schema_name,
            schema_version=schema_version,
            run_store=inline,
            blobs=self.server_blobs,
            task_status=task_status,
        )

    async def _server_task(
        self, scope: trio.CancelScope, stopped: trio.Event, *, task_status: trio.TaskStatus[str]
    ) -> None:
        try:
            with scope:
                await self._serve(task_status=task_status)
        finally:
            stopped.set()

    async def start_server(self) -> None:
        self.server_scope = trio.CancelScope()
        self._server_stopped = trio.Event()
        self.url: str = await self.root.start(
            self._server_task, self.server_scope, self._server_stopped
        )
        self.server_up = True
        self.record("server", "up", {"head": self.server_store.head})

    async def restart_server(self, down_for: float | None, *, by: str | None) -> None:
        """Stops the server, waits, starts it again (one restart at a time)."""
        async with self._server_lock:
            if down_for is None:
                down_for = self._server_downtime.uniform(0.1, 1.5)
            self.server_up = False
            self.server_scope.cancel()
            self.record("server", "down", {"by": by} if by else {})
            await self._server_stopped.wait()
            await trio.sleep(down_for)
            await self.start_server()

    def _new_server_store(self, name: str) -> ServerStore:
        """A server log in memory whose identity is drawn from the seed, not uuid4: a
        client's refusal of a rebuilt server quotes both identities, and a replay must
        quote the same ones."""
        path = self._keep(memory_path(f"{self.token}_{name}"))
        ServerStore.open(path).close()
        keeper = self._keepers[-1]
        keeper.execute(
            "UPDATE stores SET server_id = ?", (f"{name}-{self.rng(name).getrandbits(64):016x}",)
        )
        keeper.commit()
        return ServerStore.open(path)

    async def rebuild_server(self, down_for: float | None, *, by: str | None) -> None:
        """Stops the server and starts it on a new, empty database (a new identity): what
        clients see when an operator rebuilds a server. They become "incompatible"."""
        async with self._server_lock:
            if down_for is None:
                down_for = self._server_downtime.uniform(0.1, 1.5)
            self.server_up = False
            self.server_scope.cancel()
            self.record("server", "down", {"by": by, "rebuilt": True})
            await self._server_stopped.wait()
            self._rebuilds += 1
            self.server_store.close()
            self.server_store = self._new_server_store(f"server{self._rebuilds}")
            await trio.sleep(down_for)
            await self.start_server()

    # --- devices and their clients ----------------------------------------------------

    def _keep(self, path: str) -> str:
        # An in-memory database lives while a connection to it is open: this one keeps
        # it across crashes and restarts, until the run's end.
        self._keepers.append(sqlite3.connect(path, uri=True))
        return path

    def device(self, name: str) -> Device:
        """The device called ``name``, created (with its store) on first use."""
        device = self.devices.get(name)
        if device is None:
            path = self._keep(memory_path(f"{self.token}_{name}"))
            device = self.devices[name] = Device(self, name, path)
            self.commit_times[name] = {}
        return device

    def open_client(
        self, device: Device, options: Mapping[str, Any]
    ) -> AbstractAsyncContextManager[Client]:
        """The client of one incarnation of ``device``. The one place the simulator calls
        open_client: the world's defaults, then the workload's options."""
        schema_name, schema_version = self.params.schema
        settings: dict[str, Any] = {
            "client_id": device.name,
            "schema_name": schema_name,
            "schema_version": schema_version,
            "timings": SIM_TIMINGS,
            "connector": partial(self.network.connect, client_id=device.name),
            "run_store": inline,
            "rng": self.rng(f"jitter:{device.name}:{device.incarnation - 1}"),
            "trace": partial(self.record, device.name),
            # Status timestamps in virtual time too: a replay shows the same ones.
            "wall_clock": _virtual_wall_clock,
            "files": FileOptions(
                blob_store=self.device_blobs.setdefault(device.name, MemoryBlobStore()),
                state_path=self._files_state_path(device.name),
                transfer_timeout=SIM_TIMINGS.handshake_timeout,
            ),
        }
        settings.update(options)
        return open_client(self.url, device.store_path, **settings)

    def _files_state_path(self, name: str) -> str:
        # The device's transfer state, kept (like its store) across its crashes.
        path = memory_path(f"{self.token}_{name}_files")
        if path not in self._files_kept:
            self._files_kept.add(self._keep(path))
        return path

    def read_store(self, device: Device) -> tuple[list[Event], list[Event]]:
        """A closed device's confirmed log and pending events, read from its store."""
        store = ClientStore.open(device.store_path, device.name)
        try:
            return store.confirmed_events(), store.pending_events()
        finally:
            store.close()

    def close_stores(self) -> None:
        for keeper in self._keepers:
            keeper.close()
        self._keepers.clear()

    # --- faults -----------------------------------------------------------------------

    def cut(self, name: str, *, by: str | None) -> int:
        links = self.network.cut(name)
        self.record("net", "cut", {"client": name, "links": links, **({"by": by} if by else {})})
        return links

    def crash(self, name: str, *, by: str | None) -> bool:
        device = self.devices.get(name)
        scope = device._crash_scope if device is not None else None
        if device is None or scope is None or scope.cancel_called:
            return False
        self.record(name, "crash", {"by": by} if by else {})
        device.crashes += 1
        scope.cancel()
        return True

    def partition(self, names: list[str]) -> None:
        links = self.network.partition(names)
        self.record("net", "partition", {"clients": names, "links": links})

    def heal(self, *, by: str) -> None:
        healed = self.network.heal()
        self.record("net", "heal", {"clients": healed, "by": by})

    def lose_next_ack(self, name: str) -> None:
        self.network.lose_next_ack(name)
        self.record("net", "lose_next_ack", {"to": name})

    async def _faults(self) -> None:
        params = self.params
        rng = self.rng("faults")
        window = params.fault_window
        plan = sorted(
            [(rng.uniform(0, window), "disconnect") for _ in range(params.disconnects)]
            + [(rng.uniform(0, window), "crash") for _ in range(params.client_crashes)]
            + [(rng.uniform(0, window), "server_restart") for _ in range(params.server_restarts)]
        )
        for at, kind in plan:
            await trio.sleep_until(at)
            if kind == "server_restart":
                # In its own task: the plan's later faults keep their times.
                self.root.start_soon(partial(self.restart_server, rng.uniform(0.1, 1.5), by=None))
                continue
            online = [device for device in self.devices.values() if device.online]
            if not online:
                self.record("sim", "fault.skipped", {"fault": kind, "why": "no device online"})
                continue
            target = rng.choice(online).name
            if kind == "disconnect":
                self.cut(target, by=None)
            else:
                self.crash(target, by=None)

    # --- convergence ------------------------------------------------------------------

    def is_converged(self, *, final: bool) -> bool:
        """Every open device holds the server's log with nothing pending, and every
        started device is online; ``final`` also wants the workload done."""
        if final and not self.workload_done:
            return False
        head = self.server_store.head
        for device in self.devices.values():
            if final and device.managed and not device.finished:
                return False  # part of the workload, still at work
            client = device.client
            if client is None:
                if device.managed:
                    return False  # down after a crash: it comes back
                continue
            # Nothing unacknowledged and the server's whole log local: nothing can be
            # pending (every own event is on the server, so also in the local log).
            status = client.status
            if status.pending or status.upstream_head != head:
                return False
            if final and not files_settled(client):
                return False
        return True

    async def _settle(self) -> None:
        """Waits until converged and still converged once every task that can run at
        that moment has run: an application following the log has caught up (and one
        that commits in reaction to what it saw has pushed that too) before the
        invariant looks at it."""
        while True:
            await self.wait_converged(final=True)
            # Under autojump, no virtual time passes while any task can run: a sleep this
            # short returns once all of them are blocked again.
            await trio.sleep(_QUIET)
            if self.is_converged(final=True):
                return

    async def wait_converged(self, *, final: bool) -> None:
        while True:
            changed = self.changed.event
            if self.is_converged(final=final):
                return
            await changed.wait()

    def diagnose(self) -> list[ClientStall]:
        """What each device was doing when the run stalled."""
        report = []
        for name, device in self.devices.items():
            client = device.client
            if client is None:
                state = "crashed" if device.managed else "closed"
                report.append(ClientStall(name, state, 0, None, None, None, "-", None))
                continue
            pending = client.pending_events()
            status = client.status
            first = pending[0].client_seq if pending else None
            report.append(
                ClientStall(
                    client_id=name,
                    state=status.state,
                    pending=len(pending),
                    first_pending=first,
                    last_pending=pending[-1].client_seq if pending else None,
                    pending_since=self.commit_times[name].get(first) if first else None,
                    push_phase=client.push_phase,
                    last_error=status.last_error,
                )
            )
        return report


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception of a group (the one worth showing)."""
    while isinstance(exc, BaseExceptionGroup):
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = (real or list(exc.exceptions))[0]
    return exc
