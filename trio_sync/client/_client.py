"""The :class:`Client` that ``open_client()`` yields: the application's handle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import trio

from .._errors import (
    ClientClosed,
    HandshakeRefused,
    IncompatibleServer,
    ProtocolError,
    ResetRefused,
    StoreError,
    TransportError,
)
from ..protocol import Event, PushMachine, SyncStatus, backoff_delay
from ..transport import Connection, Connector
from ._arguments import TokenSource, fetch_token
from ._bus import DEFAULT_SUBSCRIBER_BUFFER, Notification, Subscription
from ._config import ClientTimings
from ._core import ClientCore
from ._reset import ResetReport, reset_store
from ._session import ClientSession
from ._streams import ConfirmedStream, StatusChanges

if TYPE_CHECKING:
    from ..files import FileSync

_StatusPredicate = Callable[[SyncStatus], bool]


class Client:
    """A connected (or connecting, or offline) sync client. Made by :func:`open_client`."""

    def __init__(
        self,
        core: ClientCore,
        urls: Sequence[str],
        connector: Connector,
        timings: ClientTimings,
        schema: tuple[str, int],
        token: TokenSource | None = None,
    ) -> None:
        self._core = core
        self._urls = tuple(urls)
        self._url_index = 0
        self._connector = connector
        self._retry_now = trio.Event()
        #: Makes a new push machine (a reset starts a fresh one).
        self._new_push: Callable[[], PushMachine] = lambda: core.push
        self._connection_scope = trio.CancelScope()
        #: Set while no connection runs: none yet (a reset right after open_client waits
        #: for nothing), or one stopped for a reset or by the block's exit.
        self._connection_stopped = trio.Event()
        self._connection_stopped.set()
        self._resume = trio.Event()
        self._resume.set()
        self._reset_lock = trio.Lock()
        self._timings = timings
        self._schema = schema
        self._token = token
        self._closed = False
        #: The status when the client closed: it no longer changes, and it can be read
        #: after the Trio run ended too.
        self._final_status: SyncStatus | None = None
        #: The sync connection while one is open (for the closing handshake on leaving).
        self._live_conn: Connection | None = None
        #: Set when the open_client block exits: no reconnecting, no failure reported.
        self._leaving = False
        #: Files that sync (see docs/files.md); set by open_client.
        self.files: FileSync

    # --- public API -------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._core.state.client_id

    @property
    def status(self) -> SyncStatus:
        """The current :class:`SyncStatus` (a fresh snapshot each time; once the client
        has closed, the status it closed with)."""
        if self._final_status is not None:
            return self._final_status
        self._core.check_run()
        return self._core.status()

    @property
    def current_url(self) -> str:
        """The server URL in use (or tried next): with several, it moves on each failure."""
        return self._urls[self._url_index % len(self._urls)]

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
            RuntimeError: Called from another Trio run than the one that opened the
                client (another thread's ``trio.run``); nothing was recorded.
        """
        self._check_usable()
        draft = self._core.state.draft(name, {} if args is None else args)
        [event] = await self._core.writer.commit([draft])
        return event

    async def commit_many(
        self, items: Iterable[tuple[str, dict[str, object] | None]]
    ) -> list[Event]:
        """Commits several events atomically, in one transaction: all of them, in order,
        or (on any error) none. Durable when this returns. Args of None are ``{}``, as in
        :meth:`commit`.

        Raises:
            InvalidEvent: One of them cannot be stored (checked before anything is
                written: then none is).
            StoreError: The write failed; none was recorded.
            ClientClosed: The client's ``open_client`` block has exited.
            RuntimeError: Called from another Trio run than the one that opened the
                client; none was recorded.
        """
        self._check_usable()
        drafts = [
            self._core.state.draft(name, {} if args is None else args) for name, args in items
        ]
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
        self._check_usable()
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
            self._check_usable()
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
            ClientClosed: The client's ``open_client`` block has exited.
        """
        self._check_usable()
        return self._core.bus.subscribe(buffer=buffer)

    def recent_events(self, n: int | None = None) -> list[Notification]:
        """The last ``n`` notifications (up to 1,000 are kept), oldest first, for
        debugging."""
        return self._core.bus.recent(n)

    def status_changes(self) -> AsyncIterator[SyncStatus]:
        """Iterates over the status: the current one, then each time it changes.

        A plain async iterator: breaking out of ``async for`` needs no clean-up. It ends
        when the client closes.
        """
        self._check_usable()
        return StatusChanges(self._core, self._is_closed)

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

        A plain async iterator: breaking out of ``async for`` needs no clean-up. It ends
        when the client closes.

        After :meth:`reset` the log is a new one: the stream starts over from its first
        event (the reset's ``recovery`` notification says when).

        Args:
            after: Start after this global seq (default: the current head, so only new
                events; 0 replays the whole log first).
        """
        self._check_usable()
        return ConfirmedStream(
            self._core, self._is_closed, self._core.durable_head if after is None else after
        )

    async def reset(self, *, keep_pending: bool = True) -> ResetReport:
        """Starts this client's store afresh and resyncs it from the server.

        For a client the server cannot sync with any more ("incompatible"): the server's
        database was rebuilt (a new server id), or this client id was used by another store
        (a store lost and recreated). And for one "stuck" on a pending event the server's
        limits refuse (committed offline before they were known, or before the server
        lowered them), once every event before it is confirmed. The pending events are
        first saved to a JSON-lines file beside the store; then, in one transaction, the
        confirmed log, the server identity and the cursors are dropped and (with
        ``keep_pending``) the pending events the server's limits take are recorded again,
        numbered after the last client_seq the server holds for this id (the others are
        only in the file, counted in ``dropped``). A server restored from an older backup
        ("the server lost events") gets this client's events it had confirmed and lost
        again too, before the pending ones. The client then reconnects and pulls
        the log again. A crash at any moment loses no pending event: before the
        transaction the old store is intact, after it the new one holds them (and the file
        is a spare copy either way).

        Returns:
            What was done: where the pending events were saved, how many were kept.

        Raises:
            ResetRefused: The client is neither "incompatible" nor stuck on a refused
                event with every event before it confirmed: the server syncs with it, so
                there is nothing to reset (and renumbering events it may already hold
                would duplicate them).
            StoreError: The file or the store could not be written; nothing changed.
            ClientClosed: The client's ``open_client`` block has exited.
        """
        self._check_usable()
        core = self._core
        async with self._reset_lock:
            # Decided under the lock: a reset that ran meanwhile changed the answer.
            refused = core.stuck_on_refused()
            first_refused = None if refused is None else refused[0].client_seq
            if core.incompatible is None and first_refused is None:
                # On a server that syncs with this client, a push may be on its way or its
                # ack lost: its events are on the server but still pending here, and kept
                # events renumbered would be appended a second time.
                raise ResetRefused(
                    f"reset() is for a client the server cannot sync with (state "
                    f"'incompatible'), or one stuck on an event the server's limits refuse; "
                    f"this one is {core.status().state!r}: nothing to reset"
                )
            resume = self._resume = trio.Event()
            try:
                self._connection_scope.cancel()
                await self._connection_stopped.wait()
                async with core.writer.exclusive:
                    # The block may have exited meanwhile: its store is closed, or about to
                    # be (it waits for this hold to end first).
                    self._check_open()
                    report = await reset_store(
                        core,
                        self._new_push(),
                        keep_pending=keep_pending,
                        first_refused=first_refused,
                    )
            finally:
                resume.set()
        return report

    # --- the connection supervisor ----------------------------------------------------

    async def _supervise(self) -> None:
        """Runs the connection supervisor, stopping it while a reset changes the store."""
        while True:
            await self._resume.wait()
            # Looked at again once awake (the wait yields even when set): a reset may have
            # begun meanwhile, found no connection running, and none may start until done.
            while not self._resume.is_set():
                await self._resume.wait()
            stopped = self._connection_stopped = trio.Event()
            try:
                with trio.CancelScope() as self._connection_scope:
                    await self._maintain_connection()
                self._core.set_phase("disconnected", "stopped for a reset")
            finally:
                stopped.set()  # for a reset, or the block's exit: a reset waits on it

    async def _maintain_connection(self) -> None:
        """Connects, syncs, and reconnects with jittered capped backoff, for ever, moving
        to the next URL (if several were given) after each failure."""
        core = self._core
        timings = self._timings
        failures = 0
        while True:
            if self._leaving:
                await trio.sleep_forever()  # until the block's cancellation, a moment away
            url = self.current_url
            core.set_phase("connecting")
            core.connect_attempts += 1
            session: ClientSession | None = None
            opened_at: float | None = None
            answered = False
            store_failed = False
            try:
                token = await self._current_token()
                async with self._connector(url) as conn:
                    opened_at = trio.current_time()
                    session = ClientSession(core, conn, timings, self._schema, token)
                    self._live_conn = conn
                    try:
                        await session.run()
                    finally:
                        self._live_conn = None
            except IncompatibleServer as exc:
                core.fast_failures.on_stable()
                core.incompatible = str(exc)
                core.set_phase("incompatible", str(exc))
                # Nothing heals this on our side; look again now and then in case the
                # server is put right (a restored database, a schema roll-back).
                await self._backoff(timings.reconnect_cap)
                continue
            except HandshakeRefused as exc:
                answered = True  # something is there, and it says no
                self._note_failure(url, exc)
            except (TransportError, ProtocolError) as exc:
                self._note_failure(url, exc)
            except StoreError as exc:
                # The local store could not take what was pulled (a full disk): this
                # connection ends, nothing of it was applied, and the next one pulls it
                # again from the head the store holds. A failure like any other (backoff;
                # "stuck" after a few), with the reason in the status; never the end of
                # the client.
                store_failed = answered = True
                self._note_failure(url, StoreError(f"this client's store: {exc}"))
            connected_at = session.connected_at if session is not None else None
            if session is not None and session.made_progress and not store_failed:
                core.fast_failures.on_stable()
            else:
                core.fast_failures.on_failure(
                    trio.current_time(),
                    up_since=opened_at if connected_at is None else connected_at,
                    answered=answered,
                )
            core.changed.notify()
            # A connection that stayed up a while resets the backoff; one that is refused or
            # dropped at once (a full server, a restarting one) must not reconnect in a loop.
            # So does one that did its work (answered pushes, sent pages) before it was
            # lost: reconnecting to a server that works is no loop to slow down.
            stable = (
                session is not None
                and not store_failed
                and (session.made_progress or session.connected_for() >= timings.stable_connection)
            )
            failures = 1 if stable else failures + 1
            self._url_index += 1
            if stable and len(self._urls) > 1:
                continue  # a node that served us well went away: try the next one at once
            await self._backoff(
                backoff_delay(
                    failures,
                    base=timings.reconnect_base,
                    cap=timings.reconnect_cap,
                    jitter=core.rng.random(),
                )
            )

    def _note_failure(self, url: str, exc: Exception) -> None:
        if self._leaving:
            return  # the connection we closed on leaving: no failure to report
        core = self._core
        core.set_phase("disconnected", str(exc))
        core.notify("connection.error", url=url, attempt=core.connect_attempts, error=str(exc))

    async def _backoff(self, seconds: float) -> None:
        """Waits ``seconds``, or less if ``retry()`` is called meanwhile."""
        with trio.move_on_after(seconds):
            await self._retry_now.wait()
        self._retry_now = trio.Event()

    def retry(self) -> None:
        """Tries again at once: skips the reconnect backoff (and the push backoff).

        For a "stuck" or "disconnected" client whose cause a person has just fixed (the
        server is back, the token renewed): nothing else changes.
        """
        self._check_usable()
        core = self._core
        core.refused_push = None
        if core.push.phase == "backoff":
            core.push.on_kick()
        self._retry_now.set()
        core.changed.notify()

    async def _leave(self) -> None:
        """Closes the sync connection with the closing handshake (the server then logs a
        client that left, not a connection lost), and reconnects no more."""
        self._leaving = True
        conn = self._live_conn
        if conn is not None:
            await conn.aclose("client closed")

    async def _current_token(self) -> str | None:
        """The token for the next connection (see :func:`fetch_token`).

        Raises:
            TokenUnavailable: The token function failed to give one.
        """
        return await fetch_token(self._token, self._timings.connect_timeout)

    @trio.lowlevel.enable_ki_protection  # its notifications call the application's hooks
    def _close(self) -> None:
        """Marks the client closed once its tasks have ended: the status says
        disconnected, waits raise ClientClosed, iterators and subscriptions end."""
        self._closed = True
        core = self._core
        core.refused_push = None  # nothing is refused any more: nothing is tried
        core.fast_failures.on_stable()
        if core.phase != "disconnected":
            core.set_phase("disconnected")  # wakes every waiter (changed is notified)
        else:
            core.changed.notify()
        core.bus.end()
        self._final_status = core.status()

    def _is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client's open_client() block has exited")

    def _check_usable(self) -> None:
        self._check_open()
        self._core.check_run()
