"""``open_client()`` and the :class:`Client` it yields."""

from __future__ import annotations

import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio

from .._errors import (
    ClientClosed,
    IncompatibleServer,
    ProtocolError,
    TransportError,
)
from .._groups import single_exception
from .._store_runner import StoreRunner, in_worker_thread
from ..protocol import Event, SyncStatus, backoff_delay, make_push_machine
from ..store import ClientStore
from ..transport import Connector, connect_websocket
from ._bus import DEFAULT_SUBSCRIBER_BUFFER, Notification, Subscription
from ._config import ClientTimings
from ._core import ClientCore, TraceHook
from ._session import ClientSession
from ._writer import ClientWriter

if TYPE_CHECKING:
    from ..files import FileOptions, FileSync

_StatusPredicate = Callable[[SyncStatus], bool]
#: A token, or a function that returns the current one (sync or async).
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

#: How many confirmed events ``confirmed_stream`` reads from the store at a time.
_STREAM_PAGE = 500


class Client:
    """A connected (or connecting, or offline) sync client. Made by :func:`open_client`."""

    def __init__(
        self,
        core: ClientCore,
        url: str,
        connector: Connector,
        timings: ClientTimings,
        schema: tuple[str, int],
        token: TokenSource | None = None,
    ) -> None:
        self._core = core
        self._url = url
        self._connector = connector
        self._timings = timings
        self._schema = schema
        self._token = token
        self._closed = False
        #: Files that sync (see docs/files.md); set by open_client.
        self.files: FileSync

    # --- public API -------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._core.state.client_id

    @property
    def status(self) -> SyncStatus:
        """The current :class:`SyncStatus` (a fresh snapshot each time)."""
        return self._core.status()

    @property
    def push_policy(self) -> str:
        return self._core.push.policy

    @property
    def push_phase(self) -> str:
        """What the push loop is doing: "ready", "in_flight", "backoff", "catching_up" or
        "parked" (only under ``push_policy="park"``)."""
        return self._core.push.phase

    async def commit(self, name: str, args: dict[str, object] | None = None) -> Event:
        """Commits an event locally; durable when this returns, pushed when connected.

        Works offline: pending events go out when the connection returns. Commits from
        several tasks at once share one transaction (and one fsync).

        Raises:
            InvalidEvent: The name is not a usable identifier, the args are not a JSON
                object every peer can store, or the event is larger than the server
                accepts; nothing was recorded.
            StoreError: The event could not be written (disk full); nothing was recorded.
            ClientClosed: The client's ``open_client`` block has exited.
        """
        self._check_open()
        draft = self._core.state.draft(name, {} if args is None else args)
        [event] = await self._core.writer.commit([draft])
        return event

    async def commit_many(self, items: Iterable[tuple[str, dict[str, object]]]) -> list[Event]:
        """Commits several events atomically, in one transaction: all of them, in order,
        or (on any error) none. Durable when this returns.

        Raises:
            InvalidEvent: One of them cannot be stored (checked before anything is
                written: then none is).
            StoreError: The write failed; none was recorded.
            ClientClosed: The client's ``open_client`` block has exited.
        """
        self._check_open()
        drafts = [self._core.state.draft(name, args) for name, args in items]
        if not drafts:
            return []
        return await self._core.writer.commit(drafts)

    async def wait_synced(self) -> SyncStatus:
        """Waits until nothing is pending and the local head equals the server head.

        A barrier, not a glance at the status: it asks the server for its current head and
        returns once that head is applied locally and the server has acknowledged every
        event committed before the call. So after it returns, everything the server held
        when it was called is in ``confirmed_events()``, and everything this client
        committed before it is on the server.

        Waits through disconnections (wrap it in ``trio.fail_after`` to bound it).

        Raises:
            IncompatibleServer: The server cannot sync with this client.
        """
        core = self._core
        reports = core.head_reports
        core.request_head()
        return await self.wait_status(
            lambda status: status.state == "synced" and core.head_reports > reports
        )

    async def wait_status(self, predicate: _StatusPredicate) -> SyncStatus:
        """Waits until ``predicate(status)`` holds and returns that status.

        Raises:
            IncompatibleServer: The status became "incompatible" (unless the predicate
                accepts that).
        """
        while True:
            self._check_open()
            changed = self._core.changed.event
            status = self._core.status()
            if predicate(status):
                return status
            if status.state == "incompatible":
                raise IncompatibleServer(status.last_error or "server is incompatible")
            await changed.wait()

    def subscribe(self, *, buffer: int = DEFAULT_SUBSCRIBER_BUFFER) -> Subscription:
        """Notifications from now on, as an async iterator (see docs/status.md).

        Ephemeral: nothing here is stored. A subscriber that falls more than ``buffer``
        notifications behind loses the oldest (counted in ``dropped``); sync never waits
        for it. Breaking out of ``async for`` needs no clean-up.

        Raises:
            ValueError: ``buffer`` is below 1.
        """
        return self._core.bus.subscribe(buffer=buffer)

    def recent_events(self, n: int | None = None) -> list[Notification]:
        """The last ``n`` notifications (up to 1,000 are kept), oldest first, for
        debugging."""
        return self._core.bus.recent(n)

    def status_changes(self) -> AsyncIterator[SyncStatus]:
        """Iterates over the status: the current one, then each time it changes.

        A plain async iterator: breaking out of ``async for`` needs no clean-up.
        """
        return _StatusChanges(self)

    def confirmed_events(self) -> list[Event]:
        """The confirmed log held locally, in server order."""
        self._check_open()
        return self._core.store.confirmed_events()

    def pending_events(self) -> list[Event]:
        """Own events not yet confirmed by the server's log, in commit order."""
        self._check_open()
        return list(self._core.state.pending)

    def confirmed_stream(self, after: int | None = None) -> AsyncIterator[Event]:
        """Iterates over confirmed events as they arrive, for applications that react.

        A plain async iterator: breaking out of ``async for`` needs no clean-up.

        Args:
            after: Start after this global seq (default: the current head, so only new
                events; 0 replays the whole log first).
        """
        return _ConfirmedStream(self, self._core.durable_head if after is None else after)

    # --- the connection supervisor ----------------------------------------------------

    async def _maintain_connection(self) -> None:
        """Connects, syncs, and reconnects with jittered capped backoff, for ever."""
        core = self._core
        timings = self._timings
        failures = 0
        while True:
            core.set_phase("connecting")
            session: ClientSession | None = None
            try:
                token = await self._current_token()
                async with self._connector(self._url) as conn:
                    session = ClientSession(core, conn, timings, self._schema, token)
                    await session.run()
            except IncompatibleServer as exc:
                core.set_phase("incompatible", str(exc))
                # Nothing heals this on our side; look again now and then in case the
                # server is put right (a restored database, a schema roll-back).
                await trio.sleep(timings.reconnect_cap)
                continue
            except (TransportError, ProtocolError) as exc:
                core.set_phase("disconnected", str(exc))
            # A connection that stayed up a while resets the backoff; one that is refused or
            # dropped at once (a full server, a restarting one) must not reconnect in a loop.
            stable = session is not None and session.connected_for() >= timings.stable_connection
            failures = 1 if stable else failures + 1
            await trio.sleep(
                backoff_delay(
                    failures,
                    base=timings.reconnect_base,
                    cap=timings.reconnect_cap,
                    jitter=core.rng.random(),
                )
            )

    async def _current_token(self) -> str | None:
        token = self._token
        if token is None or isinstance(token, str):
            return token
        value = token()
        return value if isinstance(value, str) else await value

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client's open_client() block has exited")


class _ConfirmedStream:
    def __init__(self, client: Client, after: int) -> None:
        self._client = client
        self._cursor = after
        self._buffer: deque[Event] = deque()

    def __aiter__(self) -> _ConfirmedStream:
        return self

    async def __anext__(self) -> Event:
        core = self._client._core
        while not self._buffer:
            self._client._check_open()
            changed = core.changed.event
            if self._cursor < core.durable_head:
                events = await core.run_store(
                    core.store.confirmed_events, self._cursor, _STREAM_PAGE
                )
                self._buffer.extend(events)
                if events:
                    self._cursor = events[-1].seq or self._cursor
            else:
                await changed.wait()
        return self._buffer.popleft()


class _StatusChanges:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._last: SyncStatus | None = None

    def __aiter__(self) -> _StatusChanges:
        return self

    async def __anext__(self) -> SyncStatus:
        core = self._client._core
        while True:
            self._client._check_open()
            changed = core.changed.event
            status = core.status()
            if status != self._last:
                self._last = status
                return status
            await changed.wait()


@asynccontextmanager
async def open_client(
    url: str,
    store_path: str,
    *,
    client_id: str | None = None,
    token: TokenSource | None = None,
    ssl_context: ssl.SSLContext | None = None,
    push_batch_size: int = 100,
    push_policy: str = "supervised",
    schema_name: str = "default",
    schema_version: int = 1,
    timings: ClientTimings | None = None,
    connector: Connector | None = None,
    run_store: StoreRunner = in_worker_thread,
    rng: random.Random | None = None,
    trace: TraceHook | None = None,
    files: FileOptions | None = None,
) -> AsyncIterator[Client]:
    """Opens a sync client that runs in the background while the block runs.

    The client owns a nursery with the connection supervisor (reconnecting with jittered,
    capped exponential backoff) and, while connected, the pull loop, the push supervisor
    and the heartbeat. Leaving the block stops them and closes the store.

    Args:
        url: The server's URL (``ws://host:port``).
        store_path: The client's SQLite file (created if missing).
        client_id: This client's id; None uses the one in the store, or a new one.
        token: The token the server requires (``trio-sync token``), or a function
            returning the current one (called at each connection, so it may renew it).
        ssl_context: For ``wss://`` URLs: how to check the server's certificate.
        push_batch_size: The most events in one push.
        push_policy: "supervised" (the default, never parks) or "park" (LiveStore's
            legacy behaviour, for the stall reproduction only).
        schema_name: The application schema, checked against the server's.
        schema_version: Its version.
        timings: Timeouts, intervals and backoff (see :class:`ClientTimings`).
        connector: How to open a connection (WebSocket by default, with
            ``timings.connect_timeout``).
        run_store: Where store calls run (a worker thread by default).
        rng: Source of jitter (seed it for reproducible runs).
        trace: Called with every notable step (what, details).
        files: How ``client.files`` syncs files (see :class:`~trio_sync.files.FileOptions`).

    Raises:
        ValueError: Unknown push_policy or a bad push_batch_size.
        StoreError: The store cannot be opened (in use, corrupt, another client's).
    """
    timings = timings or ClientTimings()
    push = make_push_machine(push_policy, push_batch_size, timings.push)
    store = await run_store(ClientStore.open, store_path, client_id)
    client: Client | None = None
    try:
        state = await run_store(store.load_state)
        core = ClientCore(store, state, push, run_store, rng or random.Random(), trace)
        if connector is None:
            connector = partial(
                connect_websocket, connect_timeout=timings.connect_timeout, ssl_context=ssl_context
            )
        core.writer = ClientWriter(core)
        client = Client(core, url, connector, timings, (schema_name, schema_version), token)
        client.files = _file_sync(client, store_path, files)
        with single_exception():
            async with trio.open_nursery() as nursery:
                await nursery.start(core.writer.run)
                await nursery.start(client.files.run)
                nursery.start_soon(client._maintain_connection)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        if client is not None:
            client._closed = True
        with trio.CancelScope(shield=True):
            await run_store(store.close)


def _file_sync(client: Client, store_path: str, options: FileOptions | None) -> FileSync:
    # Imported here: the files package builds on the client's core.
    from ..files import FileOptions, FileSync

    connector, url = client._connector, client._url
    return FileSync(
        client._core,
        store_path,
        options or FileOptions(),
        connect=lambda: connector(url),
        token=client._current_token,
    )
