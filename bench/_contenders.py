"""The contenders, each as a *pair*: a writer A and a reader B connected through one
server, so that every benchmark drives trio_sync and its peers through the same calls.

- trio_sync: ``trio_sync.serve`` and two ``open_client`` clients; B sees A's events in
  ``confirmed_stream``.
- relay: the raw trio-websocket relay (bench/relay.py), one message per event.
- pycrdt: pycrdt-websocket's ``WebsocketServer`` (a room) and two pycrdt ``Provider`` s;
  A appends to a shared Y array, B observes it. pycrdt-websocket ships no WebSocket
  listener of its own (it plugs into ASGI servers), so both sides run over trio-websocket
  through a small ``Channel`` adapter: the same WebSocket library as the other two.

And the fsync limit: one durable SQLite transaction per event (WAL, synchronous=FULL),
nothing else; what one-event-at-a-time commits can at best approach.
"""

from __future__ import annotations

import importlib.metadata
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from _common import (
    pace,
    raise_fd_limit,
    relay_server_command,
    serve_until_signalled,
    spawn_server,
    trio_sync_server_command,
)
from relay import serve_relay

import trio_sync

Args = dict[str, Any]

#: The event name every benchmark commits.
EVENT_NAME = "bench.event"
#: Marks warm-up events, which B's counters skip.
WARMUP = "warmup"
#: Seconds for a new pair to get one event through.
WARM_UP_TIMEOUT = 30.0
#: Seconds after the last paced commit before an event not yet seen counts as lost.
LATE_AFTER = 30.0


class Pair:
    """A writer A and a reader B connected through one contender's server.

    The contender's reader calls :meth:`saw` with the args of each of A's events as B
    sees them, in order; a measurement takes them with :meth:`watching` (warm-up events
    left out), in the reader's own call: no hop to another task per event, whose cost
    every contender would pay alike and which would narrow every ratio. Made by a
    contender's ``open_pair``, warmed up: both ends are connected and one event has gone
    through.
    """

    def __init__(self) -> None:
        self._watcher: Callable[[Args], None] | None = None
        self._warm = trio.Event()

    async def commit(self, args: Args) -> None:
        """Commits one event on A."""
        raise NotImplementedError

    async def commit_batch(self, batch: Sequence[Args]) -> bool:
        """Commits events on A in one batch; False if this contender has no batch call."""
        return False

    def saw(self, args: Args) -> None:
        """B saw an event of A's (called by the contender's reader)."""
        if WARMUP in args:
            self._warm.set()
        elif self._watcher is not None:
            self._watcher(args)

    @contextmanager
    def watching(self, watcher: Callable[[Args], None]) -> Iterator[None]:
        """Calls ``watcher`` with each event B sees meanwhile (it must not block)."""
        self._watcher = watcher
        try:
            yield
        finally:
            self._watcher = None

    async def warm_up(self) -> None:
        # Repeated: a peer may drop what is sent before it has fully registered B.
        with trio.fail_after(WARM_UP_TIMEOUT):
            while not self._warm.is_set():
                await self.commit({WARMUP: True})
                with trio.move_on_after(0.2):
                    await self._warm.wait()


# --- trio_sync -----------------------------------------------------------------------


class TrioSyncPair(Pair):
    def __init__(self, a: trio_sync.Client, b: trio_sync.Client) -> None:
        super().__init__()
        self.a, self.b = a, b

    async def commit(self, args: Args) -> None:
        await self.a.commit(EVENT_NAME, args)

    async def commit_batch(self, batch: Sequence[Args]) -> bool:
        # commit_many is the batching API the performance work adds: detect it.
        commit_many = getattr(self.a, "commit_many", None)
        if commit_many is None:
            return False
        await commit_many([(EVENT_NAME, args) for args in batch])
        return True

    async def watch(self) -> None:
        author = self.a.client_id
        async for event in self.b.confirmed_stream():
            if event.client_id == author:
                self.saw(event.args)


@asynccontextmanager
async def open_trio_sync_pair(folder: Path, url: str | None = None) -> AsyncIterator[Pair]:
    """Two trio_sync clients (fresh stores in ``folder``, fresh client ids) through the
    server at ``url``, or through a new in-process server."""
    async with trio.open_nursery() as nursery:
        if url is None:
            server = await nursery.start(trio_sync.serve, str(folder / "server.sqlite3"))
            url = server.url
        async with (
            trio_sync.open_client(url, str(folder / "a.sqlite3")) as a,
            trio_sync.open_client(url, str(folder / "b.sqlite3")) as b,
        ):
            pair = TrioSyncPair(a, b)
            nursery.start_soon(pair.watch)
            await pair.warm_up()
            yield pair
        nursery.cancel_scope.cancel()


# --- the raw relay -------------------------------------------------------------------


class RelayPair(Pair):
    def __init__(
        self, a: trio_websocket.WebSocketConnection, b: trio_websocket.WebSocketConnection
    ) -> None:
        super().__init__()
        self.a, self.b = a, b

    async def commit(self, args: Args) -> None:
        await self.a.send_message(json.dumps({"name": EVENT_NAME, "args": args}))

    async def commit_batch(self, batch: Sequence[Args]) -> bool:
        # The relay's own batching: one frame carries the whole batch.
        await self.a.send_message(json.dumps([{"name": EVENT_NAME, "args": a} for a in batch]))
        return True

    async def watch(self) -> None:
        while True:
            try:
                body = json.loads(await self.b.get_message())
            except trio_websocket.ConnectionClosed:
                return  # the pair is closing
            for event in body if isinstance(body, list) else [body]:
                self.saw(event["args"])


@asynccontextmanager
async def open_relay_pair(folder: Path, url: str | None = None) -> AsyncIterator[Pair]:
    """Two WebSocket clients of the relay at ``url``, or of a new in-process relay."""
    async with trio.open_nursery() as nursery:
        if url is None:
            url = await nursery.start(serve_relay)
        async with (
            trio_websocket.open_websocket_url(url) as a,
            trio_websocket.open_websocket_url(url) as b,
        ):
            pair = RelayPair(a, b)
            nursery.start_soon(pair.watch)
            await pair.warm_up()
            yield pair
        nursery.cancel_scope.cancel()


# --- pycrdt-websocket ----------------------------------------------------------------


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def pycrdt_missing() -> str | None:
    """Why the pycrdt peer cannot run, or None when it can."""
    try:
        import pycrdt  # noqa: F401
        from pycrdt.websocket import WebsocketServer  # noqa: F401
    except ImportError:
        return "n/a (not installed: pip install -e '.[bench]')"
    return None


class _TrioChannel:
    """pycrdt's ``Channel`` (path, send, recv, async iteration) over trio-websocket."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _TrioChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except trio_websocket.ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send_message(message)

    async def recv(self) -> bytes:
        message = await self._ws.get_message()
        return message if isinstance(message, bytes) else message.encode()


class PycrdtPair(Pair):
    def __init__(self, doc_a: Any, doc_b: Any) -> None:
        from pycrdt import Array

        super().__init__()
        self._doc_a = doc_a
        self._array_a = doc_a.get("events", type=Array)
        self._array_b = doc_b.get("events", type=Array)
        self._array_b.observe(self._observed)

    def _observed(self, event: Any) -> None:
        for change in event.delta:
            for item in change.get("insert", ()):
                self.saw(item)

    async def commit(self, args: Args) -> None:
        self._array_a.append(args)
        # Appending is a local, synchronous call: yield so that the provider sends the
        # update now, as it would between an application's awaits.
        await trio.lowlevel.checkpoint()

    async def commit_batch(self, batch: Sequence[Args]) -> bool:
        # One transaction, one update message.
        self._array_a.extend(list(batch))
        await trio.lowlevel.checkpoint()
        return True


async def serve_pycrdt(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a pycrdt-websocket server over trio-websocket until cancelled;
    ``nursery.start`` returns its ws:// URL."""
    from pycrdt.websocket import WebsocketServer

    async with WebsocketServer(auto_clean_rooms=False) as ystore, trio.open_nursery() as nursery:

        async def handle(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            await ystore.serve(_TrioChannel(ws, request.path))

        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handle, host, port, ssl_context=None, task_status=task_status
            )
        )
        task_status.started(f"ws://{host}:{server.port}")
        await trio.sleep_forever()


@asynccontextmanager
async def open_pycrdt_pair(folder: Path, url: str | None = None) -> AsyncIterator[Pair]:
    """Two pycrdt providers syncing one room of a pycrdt-websocket server at ``url``, or
    of a new in-process one."""
    from pycrdt import Doc, Provider

    room = "/bench"
    async with trio.open_nursery() as nursery:
        if url is None:
            url = await nursery.start(serve_pycrdt)
        async with (
            trio_websocket.open_websocket_url(url + room) as ws_a,
            trio_websocket.open_websocket_url(url + room) as ws_b,
        ):
            doc_a: Doc[Any] = Doc()
            doc_b: Doc[Any] = Doc()
            pair = PycrdtPair(doc_a, doc_b)
            async with (
                Provider(doc_a, _TrioChannel(ws_a, room)) as provider_a,
                Provider(doc_b, _TrioChannel(ws_b, room)) as provider_b,
            ):
                await provider_a.synced.wait()
                await provider_b.synced.wait()
                await pair.warm_up()
                yield pair
        nursery.cancel_scope.cancel()


# --- the registry --------------------------------------------------------------------

OpenPair = Callable[..., AbstractAsyncContextManager[Pair]]


@dataclass(frozen=True)
class Contender:
    name: str
    open_pair: OpenPair
    #: The command that runs its server in a process of its own (given a folder for
    #: its files); it prints a ws:// URL once it accepts connections.
    server_command: Callable[[Path], list[str]]
    #: Why it cannot run here ("n/a (...)"), or None.
    missing: str | None = None

    @asynccontextmanager
    async def pair(self, folder: Path, placement: str) -> AsyncIterator[Pair]:
        """A pair through a server in this process (``placement="one-process"``), or in
        a process of its own (``"processes"``: as servers are deployed, and the clients
        do not share one Python interpreter, and its lock, with the server)."""
        if placement == "one-process":
            async with self.open_pair(folder) as pair:
                yield pair
            return
        with spawn_server(self.server_command(folder)) as server:
            async with self.open_pair(folder, server.url) as pair:
                yield pair


def pycrdt_server_command() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "pycrdt-server"]


def pair_contenders() -> list[Contender]:
    """trio_sync first (the ratios are trio_sync / peer), then its peers."""
    return [
        Contender(
            "trio_sync",
            open_trio_sync_pair,
            lambda folder: trio_sync_server_command(folder / "server.sqlite3"),
        ),
        Contender("relay", open_relay_pair, lambda folder: relay_server_command()),
        Contender(
            "pycrdt", open_pycrdt_pair, lambda folder: pycrdt_server_command(), pycrdt_missing()
        ),
    ]


def versions() -> dict[str, str | None]:
    """The versions measured, for the JSON results."""
    names = ["trio_sync", "trio", "trio-websocket", "pycrdt-websocket", "pycrdt", "anyio"]
    return {name: _version(name) for name in names} | {"sqlite": sqlite3.sqlite_version}


# --- measuring a pair ----------------------------------------------------------------


async def burst(pair: Pair, count: int, tasks: int = 1, batch: int = 0) -> float | None:
    """Events per second from the first commit until B has seen all ``count``.

    ``tasks`` concurrent committers share the events; ``batch`` > 0 commits them in
    batches of that size instead (None if the contender has no batch call).
    """
    payload = [{"i": i} for i in range(count)]
    seen = 0
    done = trio.Event()

    def count_visible(args: Args) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    with pair.watching(count_visible):
        started = time.perf_counter()
        if batch:
            for first in range(0, count, batch):
                if not await pair.commit_batch(payload[first : first + batch]):
                    return None
        else:
            async with trio.open_nursery() as committers:
                for share in range(tasks):
                    committers.start_soon(_commit_each, pair, payload[share::tasks])
        await done.wait()
    return count / (time.perf_counter() - started)


async def _commit_each(pair: Pair, payload: Sequence[Args]) -> None:
    for args in payload:
        await pair.commit(args)


async def paced_latencies(pair: Pair, rate: float, count: int) -> tuple[float, list[float]]:
    """Commits ``count`` events at ``rate`` per second; returns the rate reached and,
    per event B saw, the seconds from the commit call until B saw it (fewer than
    ``count`` if some never arrived within ``LATE_AFTER`` seconds of the last commit)."""
    latencies: list[float] = []
    done = trio.Event()

    def record(args: Args) -> None:
        latencies.append(time.perf_counter() - args["t"])
        if len(latencies) == count:
            done.set()

    async def commit(i: int) -> None:
        await pair.commit({"i": i, "t": time.perf_counter()})

    with pair.watching(record):
        reached = await pace(rate, count, commit)
        with trio.move_on_after(LATE_AFTER):
            await done.wait()
    return reached, latencies


async def fsync_limit_in_thread(folder: Path, count: int) -> float:
    """Like :func:`fsync_limit` with one event per transaction, but each transaction sent
    to a worker thread (``trio.to_thread``), as an event loop that must never block on an
    fsync does: the floor under any such engine's one-at-a-time commit."""
    path = folder / "fsync-thread.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE events (client_seq INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "args TEXT NOT NULL)"
        )

        def one(i: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?)", (i + 1, EVENT_NAME, json.dumps({"i": i}))
            )
            conn.execute("COMMIT")

        started = time.perf_counter()
        for i in range(count):
            await trio.to_thread.run_sync(one, i)
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


def fsync_limit(folder: Path, count: int, per_transaction: int = 1) -> float:
    """Events per second writing ``count`` event rows, ``per_transaction`` per durable
    SQLite transaction (WAL, synchronous=FULL): the storage floor under a commit."""
    path = folder / f"fsync-{per_transaction}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE events (client_seq INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "args TEXT NOT NULL)"
        )
        rows = [(i + 1, EVENT_NAME, json.dumps({"i": i})) for i in range(count)]
        started = time.perf_counter()
        for first in range(0, count, per_transaction):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events VALUES (?, ?, ?)", rows[first : first + per_transaction]
            )
            conn.execute("COMMIT")
        return count / (time.perf_counter() - started)
    finally:
        conn.close()


if __name__ == "__main__":
    # ``python bench/_contenders.py pycrdt-server``: the pycrdt peer's server on its own.
    if sys.argv[1:] != ["pycrdt-server"]:
        raise SystemExit("usage: python bench/_contenders.py pycrdt-server")
    raise_fd_limit()
    trio.run(serve_until_signalled, serve_pycrdt, "pycrdt-websocket", "127.0.0.1", 0)
