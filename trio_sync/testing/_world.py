"""The world a workload runs in: devices with real clients, fault controls, time, chance.

A *device* is a name with its own in-memory store that outlives the device's crashes. While
a device is open it has a real :class:`~trio_sync.Client` on the simulated network; a
crash tears the client down with every task of that incarnation, keeps the store, and the
device can be opened again (the application reloads from its store, like a restarted
process).

Two ways to run a device: ``async with world.open_client(name) as client:`` for a block of
the workload (a crash ends the block quietly), or ``world.start_device(name, main)`` for a
device the simulator keeps running: ``main(device)`` runs in it, the device comes back after
every crash (``main`` runs again), and it stays online after ``main`` returns so that it
takes part in the final convergence and the invariant sees it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .._groups import single_exception
from ..client import Client
from ..protocol import Event
from ._sandbox import SimulationError
from ._trace import TraceRecord

if TYPE_CHECKING:
    from ._engine import Engine
    from ._params import SimParams

T = TypeVar("T")

#: Names the simulator's own trace lines use; a device cannot take them.
RESERVED_NAMES = frozenset({"server", "net", "sim", "workload"})

#: Options the world decides for every client it opens.
_WORLD_OPTIONS = frozenset({"client_id", "url", "store_path"})


class Device:
    """One simulated device: a name, a store that survives crashes, and (while open) a
    client. Get one from ``world.devices[name]``; ``start_device`` returns it too.

    Attributes:
        name: The device's name, which is also its client id.
        store_path: Its in-memory store (``trio_sync.store.memory_path``).
        client: The open client, or None while the device is closed or crashed.
        app: Whatever the workload keeps here for its invariants (your application
            object). Cleared when the incarnation ends: a crash loses what was in memory.
        incarnation: How many times it has been opened.
        crashes: How many times it crashed.
        managed: Started by ``start_device``: the simulator brings it back after a crash.
        finished: ``start_device``'s ``main`` has returned (in some incarnation).
    """

    def __init__(self, engine: Engine, name: str, store_path: str) -> None:
        self._engine = engine
        self.name = name
        self.store_path = store_path
        self.client: Client | None = None
        self.app: Any = None
        self.incarnation = 0
        self.crashes = 0
        self.managed = False
        self.finished = False
        self._finished = trio.Event()
        self._crash_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self._closed.set()

    @property
    def online(self) -> bool:
        """Open right now (its client runs)."""
        return self.client is not None

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Runs ``fn(*args)`` as a task of this incarnation: a crash ends it, and so does
        the device's block ending. For the application's own background work (for example
        a task that follows ``client.confirmed_stream()``).

        Raises:
            SimulationError: The device is not open.
        """
        if self._nursery is None:
            raise SimulationError(f"device {self.name!r} is not open")
        self._nursery.start_soon(fn, *args)

    async def wait_finished(self) -> None:
        """Waits until ``start_device``'s ``main`` has returned once."""
        await self._finished.wait()

    def confirmed_events(self) -> list[Event]:
        """The confirmed log this device holds (from its client, or its store if closed)."""
        if self.client is not None:
            return self.client.confirmed_events()
        return self._engine.read_store(self)[0]

    def pending_events(self) -> list[Event]:
        """Its own events not yet confirmed (from its client, or its store if closed)."""
        if self.client is not None:
            return self.client.pending_events()
        return self._engine.read_store(self)[1]

    def __repr__(self) -> str:
        state = "online" if self.online else "closed"
        return f"<Device {self.name!r} {state}, incarnation {self.incarnation}>"


class WorkloadTrace:
    """``world.trace``: call it to add a line, iterate it to read the run so far."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __call__(self, what: str, /, *, actor: str = "workload", **details: object) -> None:
        """Adds ``what`` with ``details`` at the current virtual time (in the digest too)."""
        self._engine.record(actor, what, details)

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self._engine.trace)

    def __len__(self) -> int:
        return len(self._engine.trace)

    def format(self, *, actor: str | None = None, limit: int | None = None) -> str:
        """The records so far as text (see :meth:`Trace.format`)."""
        return self._engine.trace.format(actor=actor, limit=limit)


class World:
    """What a workload (``async def workload(world)``) sees and controls.

    Attributes:
        seed: The run's seed.
        params: The network and background faults (:class:`SimParams`).
        random: The workload's own source of chance, derived from the seed: choices drawn
            from it replay too. (Never use the ``random`` module's global functions.)
        trace: Call ``world.trace("what", key=value)`` to add a line to the trace.
    """

    def __init__(self, engine: Engine, pins: Mapping[str, Any]) -> None:
        self._engine = engine
        self._pins = dict(pins)
        self.seed = engine.seed
        self.params: SimParams = engine.params
        self.random = random.Random(f"{engine.seed}:workload")
        self.trace = WorkloadTrace(engine)
        #: Every workload parameter read, with the value used (for the result and replay).
        self.params_read: dict[str, Any] = {}
        #: The smallest sensible value of each shrinkable parameter.
        self.param_minimums: dict[str, int] = {}

    # --- time, parameters -------------------------------------------------------------

    def now(self) -> float:
        """The current virtual time, in seconds."""
        return trio.current_time()

    def param(
        self,
        name: str,
        default: T | None = None,
        *,
        draw: Callable[[random.Random], T] | None = None,
        minimum: int | None = None,
    ) -> T:
        """A parameter of the workload: the value pinned by the caller, else ``default``,
        else drawn from the seed by ``draw``.

        Pin it with ``run_simulation(seed, workload, name=value)`` or ``--param
        name=value``. ``draw`` gets a ``random.Random`` of its own, named after the
        parameter, so drawing or pinning one parameter never shifts another.

        Args:
            name: The parameter's name.
            default: Its value when not pinned (and no ``draw``).
            draw: Draws its value from the seed when not pinned.
            minimum: For an integer: the smallest value that makes sense. Shrinking tries
                smaller values down to it (for example fewer devices); without it,
                shrinking leaves the parameter alone.

        Raises:
            TypeError: ``name`` is a simulation parameter (read ``world.params`` instead),
                or neither or both of ``default`` and ``draw`` were given.
        """
        if name in self._engine.sim_param_names:
            raise TypeError(f"{name!r} is a simulation parameter: read world.params.{name}")
        if (default is None) == (draw is None):
            raise TypeError(f"world.param({name!r}): give a default or a draw function")
        if name in self.params_read:
            value: T = self.params_read[name]
            return value
        if name in self._pins:
            value = self._pins[name]
        elif draw is not None:
            value = draw(random.Random(f"{self.seed}:param:{name}"))
        else:
            assert default is not None
            value = default
        self.params_read[name] = value
        if minimum is not None:
            self.param_minimums[name] = minimum
        return value

    # --- devices ----------------------------------------------------------------------

    @property
    def devices(self) -> Mapping[str, Device]:
        """Every device opened so far, in the order they were first opened."""
        return self._engine.devices

    @property
    def clients(self) -> dict[str, Client]:
        """The clients of the devices open right now, by name."""
        return {
            name: device.client
            for name, device in self._engine.devices.items()
            if device.client is not None
        }

    @property
    def apps(self) -> dict[str, Any]:
        """``device.app`` of every open device that has one, by name (for invariants)."""
        return {
            name: device.app
            for name, device in self._engine.devices.items()
            if device.client is not None and device.app is not None
        }

    @asynccontextmanager
    async def open_client(self, name: str, **options: Any) -> AsyncIterator[Client]:
        """Opens device ``name``: a real client on the simulated network, on the device's
        own in-memory store (created on first use, kept across crashes).

        ``options`` go to :func:`trio_sync.open_client` (``push_policy``,
        ``push_batch_size``, ``schema_name``, ``timings``...); by default the client gets
        the simulator's timings (``SIM_TIMINGS``), the server's schema, the simulated
        network, inline store calls, seeded jitter and the trace hook.

        A crash of the device (``world.crash(name)`` or a background one) cancels the
        block and its tasks; the ``async with`` then ends without an error. Look at
        ``world.devices[name].crashes`` to know.

        Raises:
            TypeError: ``client_id``, ``url`` or ``store_path`` among the options.
            SimulationError: The device is already open (or started with start_device).
        """
        device = self._prepare(name, options)
        if device.managed:
            raise SimulationError(f"device {name!r} runs under start_device()")
        async with self._incarnation(device, options, announce=True) as client:
            yield client

    def start_device(
        self,
        name: str,
        main: Callable[..., Awaitable[object]],
        *args: object,
        **options: Any,
    ) -> Device:
        """Starts a device the simulator keeps running, and returns it at once.

        ``main(device, *args)`` runs in the device. After a crash the device stays down
        for a while (0.2 to 2 virtual seconds, from the seed), comes back on its store and
        runs ``main`` again: write ``main`` so that it resumes from what the store holds.
        After ``main`` returns, the device stays online (its ``device.start_soon`` tasks
        keep running) until the simulation ends. The workload is not done, and the final
        convergence does not begin, before every started device's ``main`` has returned.

        Raises:
            TypeError: Bad options (see :meth:`open_client`).
            SimulationError: The device is already open or started.
        """
        device = self._prepare(name, options)
        if device.managed or not device._closed.is_set():
            raise SimulationError(f"device {name!r} is already running")
        device.managed = True
        self._engine.root.start_soon(
            self._device_process, device, main, args, options, name=f"device {name}"
        )
        return device

    def _prepare(self, name: str, options: Mapping[str, Any]) -> Device:
        given = sorted(_WORLD_OPTIONS & set(options))
        if given:
            raise TypeError(
                f"the world decides {given} for its clients (the device name is the client id)"
            )
        if not name or name in RESERVED_NAMES:
            raise SimulationError(
                f"{name!r} cannot name a device (reserved: {sorted(RESERVED_NAMES)})"
            )
        return self._engine.device(name)

    async def _device_process(
        self,
        device: Device,
        main: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        options: dict[str, Any],
    ) -> None:
        downtime = self._engine.rng(f"downtime:{device.name}")
        while True:
            async with self._incarnation(device, options, announce=False):
                await main(device, *args)
                if not device.finished:
                    device.finished = True
                    device._finished.set()
                    self._engine.changed.notify()
                await trio.sleep_forever()
            await trio.sleep(downtime.uniform(0.2, 2.0))  # down for a while
            self._engine.record(device.name, "restart", {"incarnation": device.incarnation + 1})

    @asynccontextmanager
    async def _incarnation(
        self, device: Device, options: dict[str, Any], *, announce: bool
    ) -> AsyncIterator[Client]:
        engine = self._engine
        if device._crash_scope is not None:
            if not device._crash_scope.cancel_called:
                raise SimulationError(f"device {device.name!r} is already open")
            await device._closed.wait()  # a crashed incarnation still unwinding
        device.incarnation += 1
        device._closed = trio.Event()
        if announce:
            engine.record(device.name, "open", {"incarnation": device.incarnation})
        try:
            with trio.CancelScope() as crash_scope:
                device._crash_scope = crash_scope
                async with engine.open_client(device, options) as client:
                    with single_exception():
                        async with trio.open_nursery() as nursery:
                            device.client, device._nursery = client, nursery
                            engine.changed.notify()
                            try:
                                yield client
                            finally:
                                # The incarnation's tasks end with it.
                                nursery.cancel_scope.cancel()
        finally:
            device.client = device._nursery = device._crash_scope = None
            device.app = None
            device._closed.set()
            engine.changed.notify()

    # --- faults -----------------------------------------------------------------------

    def cut(self, name: str) -> int:
        """Cuts device ``name``'s connections now (what is in flight is lost); it
        reconnects by itself. Returns how many connections were cut."""
        return self._engine.cut(name, by="workload")

    def partition(self, names: Iterable[str]) -> None:
        """Keeps these devices from reaching the server (their connections are cut, new
        ones fail) until :meth:`heal`. The simulator heals when the workload returns."""
        self._engine.partition(list(names))

    def heal(self) -> None:
        """Ends every partition."""
        self._engine.heal(by="workload")

    def crash(self, name: str) -> bool:
        """Crashes device ``name``: its client's tasks and its incarnation's tasks are torn
        down at once, its store is kept. Returns False if it was not open."""
        return self._engine.crash(name, by="workload")

    async def restart_server(self, down_for: float | None = None) -> None:
        """Stops the server, waits ``down_for`` virtual seconds (drawn from the seed when
        None: 0.1 to 1.5), and starts it again on its database."""
        await self._engine.restart_server(down_for, by="workload")

    async def rebuild_server(self, down_for: float | None = None) -> None:
        """Stops the server and starts it on a new, empty database with a new identity:
        an operator's rebuild. Clients that synced before say "incompatible" until the
        workload calls ``client.reset()``."""
        await self._engine.rebuild_server(down_for, by="workload")

    def lose_next_ack(self, name: str) -> None:
        """The next push ack the server sends to device ``name`` is lost on the way (each
        call loses one more)."""
        self._engine.lose_next_ack(name)

    async def wait_converged(self) -> None:
        """Waits until every open device holds the server's whole log with nothing
        pending, and every device started with ``start_device`` is back online."""
        await self._engine.wait_converged(final=False)
