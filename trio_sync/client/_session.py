"""One connection of a client: handshake, then the reader, push loop and heartbeat.

A session ends by raising: :class:`ConnectionClosed` (or another transport or protocol
error) when the connection is lost or found dead, :class:`IncompatibleServer` when the
server cannot sync with this client. The connection supervisor decides what comes next.
"""

from __future__ import annotations

import trio

from .._errors import ConnectionClosed, IncompatibleServer, ProtocolError
from .._groups import single_exception
from ..protocol import (
    FAST_FAILURE_SECONDS,
    PROTOCOL_VERSION,
    ConnectionDead,
    Error,
    Heartbeat,
    Hello,
    KickPush,
    Ping,
    Pong,
    Pull,
    PullPage,
    PushAck,
    PushRejected,
    Refused,
    RestartPull,
    SendPing,
    SendProbe,
    SendPush,
    ServerAhead,
    SilenceWatch,
    Silent,
    StreamWatch,
    Welcome,
    server_lost_events,
    welcome_problem,
)
from ..transport import Connection
from ._config import ClientTimings
from ._core import ClientCore


class ClientSession:
    """Runs one connection until it fails."""

    def __init__(
        self,
        core: ClientCore,
        conn: Connection,
        timings: ClientTimings,
        schema: tuple[str, int],
        token: str | None = None,
    ) -> None:
        self._core = core
        self._conn = conn
        self._token = token
        self._timings = timings
        self._schema = schema
        self._heartbeat = Heartbeat(timings.heartbeat)
        self._pull_id = 0
        # Pages wait here for the applier, each with the bytes that brought it (they decide,
        # with its rows, where it is written); a few at most, then the reader waits too.
        self._send_page, self._pages = trio.open_memory_channel[tuple[PullPage, int]](16)
        #: Pages handed to the applier and not merged yet (while any is, the read loop
        #: queues the next behind it: order is kept).
        self._pages_waiting = 0
        #: Whether the handshake succeeded, and when.
        self.connected = False
        self._connected_at = 0.0
        self._bytes_seen = 0
        self._silence = SilenceWatch()
        #: Set when a push is sent while the silence watch was idle: it starts watching.
        self._silence_armed = trio.Event()
        #: When the last message arrived (None: none yet), for the silence watch.
        self._heard_at: float | None = None
        self._bytes_heard = 0
        #: Whether the server answered a push or sent a page on this connection: one that
        #: did is no fast failure however soon it ends (it was doing its work).
        self.made_progress = False

    async def run(self) -> None:
        """Handshakes, then syncs until the connection ends (always by an exception).

        Raises:
            ConnectionClosed, TransportError, ProtocolError: The connection failed.
            IncompatibleServer: The server cannot sync with this client.
        """
        try:
            asked = trio.current_time()
            welcome = await self._handshake()
            self._core.push.round_trip.sample(trio.current_time() - asked)
            self._check_welcome(welcome)
            self._heartbeat.note_server_head(welcome.head)
            self._core.push.on_connected()
            self.connected = True
            self._connected_at = trio.current_time()
            await self._core.on_connected(welcome)
            with single_exception():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_loop)
                    nursery.start_soon(self._apply_pages)
                    nursery.start_soon(self._push_loop)
                    nursery.start_soon(self._heartbeat_loop)
                    nursery.start_soon(self._watch_stream)
                    nursery.start_soon(self._watch_silence)
                    nursery.start_soon(self._head_probe_loop)
                    nursery.start_soon(self._note_stable)
                    await self._restart_pull("connected")
        except ProtocolError as exc:
            await self._say_goodbye(Error(f"client refuses: {exc}"))
            raise

    @property
    def connected_at(self) -> float | None:
        """When the handshake succeeded (None: it did not)."""
        return self._connected_at if self.connected else None

    def connected_for(self) -> float:
        """Seconds since the handshake succeeded (0 if it did not)."""
        return trio.current_time() - self._connected_at if self.connected else 0.0

    # --- handshake --------------------------------------------------------------------

    async def _handshake(self) -> Welcome:
        core = self._core
        name, version = self._schema
        await self._conn.send(
            Hello(
                protocol_version=PROTOCOL_VERSION,
                client_id=core.state.client_id,
                schema_name=name,
                schema_version=version,
                server_id=core.known_server_id,
                cursor=core.state.upstream_head,
                token=self._token,
                last_client_seq=core.state.next_client_seq - 1,
            )
        )
        with trio.move_on_after(self._timings.handshake_timeout):
            reply = await self._conn.receive()
            if isinstance(reply, Welcome):
                core.server_held_client_seq = reply.last_client_seq
                return reply
            if isinstance(reply, Error):
                if reply.last_client_seq is not None:
                    core.server_held_client_seq = reply.last_client_seq
                if reply.fatal:
                    core.server_lost_events = False  # refused: not a shorter log of ours
                    raise IncompatibleServer(reply.reason)
                raise ConnectionClosed(f"server refused: {reply.reason}")
            raise ProtocolError(f"expected 'welcome', got {reply.TYPE!r}")
        raise ConnectionClosed(
            f"no welcome from the server within {self._timings.handshake_timeout:g}s"
        )

    def _check_welcome(self, welcome: Welcome) -> None:
        problem = welcome_problem(
            welcome,
            schema=self._schema,
            known_server_id=self._core.known_server_id,
            upstream_head=self._core.state.upstream_head,
        )
        if problem is not None:
            core = self._core
            core.server_lost_events = server_lost_events(
                welcome,
                known_server_id=core.known_server_id,
                upstream_head=core.state.upstream_head,
            )
            raise IncompatibleServer(problem)

    # --- tasks ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        core = self._core
        while True:
            message = await self._conn.receive()
            self._heard_at = trio.current_time()
            if isinstance(message, PullPage):
                self.made_progress = True
                core.note_server_head(message.head)
                received = getattr(self._conn, "bytes_received", 0)
                size = received - self._bytes_seen
                core.note_history_received(size)
                self._bytes_seen = received
                self._heartbeat.note_server_head(message.head)
                if self._applies_here(message, size):
                    await self._apply([(message, size)])
                else:
                    self._pages_waiting += 1
                    await self._send_page.send((message, size))
            elif isinstance(message, PushAck):
                self.made_progress = True
                self._silence.on_push_answered()
                core.acknowledge(message)
            elif isinstance(message, ServerAhead):
                self._silence.on_push_answered()
                core.trace("push.server_ahead", push_id=message.push_id, head=message.head)
                core.note_server_head(message.head)
                core.push.on_server_ahead(
                    message.push_id,
                    message.head,
                    core.state,
                    trio.current_time(),
                    core.rng.random(),
                )
                core.changed.notify()
            elif isinstance(message, PushRejected):
                self._silence.on_push_answered()
                core.trace("push.rejected", push_id=message.push_id, reason=message.reason)
                news = core.push.on_rejected(
                    message.push_id, message.reason, trio.current_time(), core.rng.random()
                )
                if news and not message.retryable:
                    # Retrying the same batch cannot help: say so ("stuck") rather than
                    # look busy for ever.
                    core.refused_push = f"push refused: {message.reason}"
                core.changed.notify()
            elif isinstance(message, Pong):
                self._heartbeat.on_pong(message.nonce, message.head)
                core.note_fresh_server_head(message.head)
            elif isinstance(message, Error):
                if message.fatal:
                    raise IncompatibleServer(message.reason)
                raise ConnectionClosed(f"server closed the connection: {message.reason}")
            else:
                raise ProtocolError(f"a server does not send {message.TYPE!r}")

    def _applies_here(self, page: PullPage, size: int) -> bool:
        """Whether the read loop merges ``page`` itself: no page handed to the applier
        is still to be merged (counted from the hand-over to the end of its merge: a page
        in the channel, or taken from it, is not merged yet), and its write would run on
        the loop at once (no wait, so reading goes on as soon as it is written). Saves
        the switch to the applier and back."""
        return not self._pages_waiting and self._core.writer.writes_here(len(page.events), size)

    async def _apply_pages(self) -> None:
        """Merges pulled pages: whatever has queued up while the last write ran is merged
        and written at once (a catch-up costs one transaction per batch, not per page)."""
        async for first in self._pages:
            pages = [first]
            while True:
                try:
                    pages.append(self._pages.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self._apply(pages)
            finally:
                self._pages_waiting -= len(pages)

    async def _apply(self, pages: list[tuple[PullPage, int]]) -> None:
        # Pages of a pull already replaced are dropped: the new one resends them.
        current = [(page, size) for page, size in pages if page.pull_id == self._pull_id]
        events = [e for page, _ in current for e in page.events]
        if not events:
            return
        result = await self._core.merge(events, size=sum(size for _, size in current))
        if isinstance(result, Refused):
            await self._restart_pull(result.reason)

    async def _watch_stream(self) -> None:
        """Restarts the pull when it stopped delivering what the server is known to hold,
        within a round-trip timeout (a lost last page leaves no gap to notice)."""
        core = self._core
        watch = StreamWatch()
        while True:
            changed = core.heads_changed.event
            watch.observe(
                trio.current_time(),
                upstream_head=core.state.upstream_head,
                server_head=core.server_head or 0,
            )
            timeout = core.push.answer_timeout()
            deadline = watch.deadline(timeout)
            if deadline is None:
                await changed.wait()
            else:
                with trio.move_on_at(deadline):
                    await changed.wait()
            stalled = watch.check(trio.current_time(), timeout)
            if stalled is not None:
                core.trace("pull.stalled", reason=stalled.reason)
                await self._restart_pull(stalled.reason)

    async def _watch_silence(self) -> None:
        """Replaces a connection that went silent while a push waited for its answer
        (``protocol/_silence.py``): a probe ping after a round-trip timeout of silence, and
        the connection is dead after another."""
        core = self._core
        watch = self._silence
        while True:
            deadline = watch.deadline(core.push.answer_timeout())
            if deadline is None:
                await self._silence_armed.wait()
                self._silence_armed = trio.Event()
                continue
            await trio.sleep_until(deadline)
            now = trio.current_time()
            heard_at = self._heard_at
            # Bytes of a large frame still arriving count: the connection is alive.
            received = getattr(self._conn, "bytes_received", 0)
            if received != self._bytes_heard:
                self._bytes_heard = received
                heard_at = now
            action = watch.check(now, heard_at=heard_at, timeout=core.push.answer_timeout())
            if isinstance(action, SendProbe):
                core.trace("silence.probe")
                await self._conn.send(Ping(nonce=0))
            elif isinstance(action, Silent):
                core.trace("silence.dead", reason=action.reason)
                core.notify("heartbeat.recovery", reason="silent-connection", detail=action.reason)
                raise ConnectionClosed(f"silent connection: {action.reason}")

    async def _restart_pull(self, why: str) -> None:
        self._pull_id += 1
        cursor = self._core.state.upstream_head
        self._core.trace("pull.start", pull_id=self._pull_id, cursor=cursor, why=why)
        await self._conn.send(Pull(pull_id=self._pull_id, cursor=cursor))

    async def _push_loop(self) -> None:
        core = self._core
        while True:
            changed = core.changed.event
            action = core.push.poll(core.state, trio.current_time())
            if isinstance(action, SendPush):
                push = action.push
                core.trace(
                    "push.send",
                    push_id=push.push_id,
                    parent=push.parent,
                    first=push.events[0].client_seq,
                    count=len(push.events),
                )
                await self._conn.send(push)
                if self._silence.on_push_sent(trio.current_time()):
                    self._bytes_heard = getattr(self._conn, "bytes_received", 0)
                    self._silence_armed.set()
                continue
            if action.deadline is None:
                core.note_refused_head()  # nothing to push: maybe the next one never goes
                await changed.wait()
            else:
                with trio.move_on_at(action.deadline):
                    await changed.wait()
            now = trio.current_time()
            if action.deadline is not None and now >= action.deadline:
                core.push.on_deadline(now, core.rng.random())
                core.trace("push.deadline", phase=core.push.phase, error=core.push.last_error)
                core.changed.notify()

    async def _heartbeat_loop(self) -> None:
        core = self._core
        while True:
            await trio.sleep(self._timings.heartbeat.interval)
            push_stuck = core.push.is_stuck(core.state)
            actions = self._heartbeat.tick(
                trio.current_time(), upstream_head=core.state.upstream_head, push_stuck=push_stuck
            )
            for action in actions:
                if isinstance(action, SendPing):
                    await self._conn.send(Ping(nonce=action.nonce))
                elif isinstance(action, ConnectionDead):
                    core.trace("heartbeat.dead", reason=action.reason)
                    core.notify(
                        "heartbeat.recovery", reason="dead-connection", detail=action.reason
                    )
                    raise ConnectionClosed(f"heartbeat: {action.reason}")
                elif isinstance(action, RestartPull):
                    core.trace("heartbeat.restart_pull", reason=action.reason)
                    core.notify("heartbeat.recovery", reason="stalled-pull", detail=action.reason)
                    await self._restart_pull(f"heartbeat: {action.reason}")
                elif isinstance(action, KickPush):
                    core.trace("heartbeat.kick_push", reason=action.reason)
                    core.notify("heartbeat.recovery", reason="stuck-push", detail=action.reason)
                    core.push.on_kick()
            for check in core.tick_checks:
                await check()
            if core.stuck != self._heartbeat.stuck:
                core.stuck = self._heartbeat.stuck
            core.changed.notify()

    async def _note_stable(self) -> None:
        # Up long enough not to count as failing fast: a run of fast failures ends.
        await trio.sleep(FAST_FAILURE_SECONDS)
        core = self._core
        if core.fast_failures.count:
            core.fast_failures.on_stable()
            core.changed.notify()

    async def _head_probe_loop(self) -> None:
        # Pings outside the heartbeat's numbering (nonce 0): their pongs report a fresh
        # server head for wait_synced, without disturbing liveness accounting.
        core = self._core
        while True:
            await core.head_wanted.wait()
            core.head_wanted = trio.Event()
            await self._conn.send(Ping(nonce=0))

    async def _say_goodbye(self, message: Error) -> None:
        with trio.CancelScope(deadline=trio.current_time() + 1, shield=True):
            try:
                await self._conn.send(message)
            except ConnectionClosed:
                return
