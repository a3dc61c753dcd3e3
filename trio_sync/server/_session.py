"""One client connection on the server: handshake, pushes, a pull stream, pings.

Whatever the client sends, a session ends by closing its own connection, with a reason the
client is told and the log records; nothing it sends can end the server. Sends go through
the connection's one writer (see ``transport/_outbox.py``), so the pull stream, which this
session cancels when a new pull replaces it, never cuts a frame.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time

import trio

from .._errors import ConnectionClosed, ProtocolError, StoreError, StoreFull, TrioSyncError
from .._groups import release_frames, single_exception
from ..protocol import (
    PROTOCOL_VERSION,
    Accept,
    Ahead,
    Error,
    Hello,
    PageBudget,
    Ping,
    Pong,
    Pull,
    PullPage,
    Push,
    PushAck,
    PushRejected,
    ServerAhead,
    ServerMessage,
    TokenBucket,
    TokenError,
    Welcome,
    hello_problem,
    protocol_problem,
    reused_id_problem,
)
from ..protocol._tokens import utc_time
from ..store import store_for_target
from ..transport import CLOSE_GOING_AWAY, CLOSE_NORMAL, Connection
from ._hub import Hub, InternalError, TooManyStores
from ._log import StoreLog

logger = logging.getLogger("trio_sync.server")


#: The first page of a stream (the budget doubles while the client keeps up).
FIRST_PAGE_BYTES = 64 * 1024
#: A pull costs this many messages of the rate limit.
PULL_COST = 100
#: And every this many bytes received cost one message (1,000 messages a second are then
#: about 4 MiB a second).
BYTES_PER_MESSAGE = 4096
#: Pushes a connection may have received and not yet answered; the next waits for room
#: (a client pipelines a few pushes, and nothing more is read from it meanwhile).
PUSHES_QUEUED = 8


class Refusal(Exception):
    """Ends a session with a reason the client is told (``fatal``: retrying cannot help,
    the client shows "incompatible") and a short ``code`` for metrics."""

    def __init__(
        self, reason: str, code: str, *, fatal: bool = False, last_client_seq: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.fatal = fatal
        self.last_client_seq = last_client_seq


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def loggable(text: str, limit: int = 300) -> str:
    """Text a client chose (a field path holds its keys), made safe for a log line: control
    characters escaped, so nobody can forge a line, and cut to ``limit`` characters."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)


class ServerSession:
    """Serves one connection until it closes."""

    def __init__(self, conn: Connection, hub: Hub) -> None:
        self._conn = conn
        self._hub = hub
        self._limits = hub.config.limits
        self._pull_scope: trio.CancelScope | None = None
        self._receive_scope: trio.CancelScope | None = None
        #: Pushes received and not yet answered go here, to the task that answers them.
        self._send_push: trio.MemorySendChannel[Push] | None = None
        self._receiving = False
        #: Why the server ended this session on its own (shutdown, a newer connection).
        self._stopped: tuple[str, bool] | None = None
        self._bytes_charged = 0
        #: When the connection's token expires: (UNIX time, Trio time); never without one.
        self._token_expires = (math.inf, math.inf)
        #: The highest client_seq the store holds from this client (told in the welcome).
        self._held = 0
        self.client_id = "?"
        self.store_id = "?"
        self.peer = conn.peer

    @property
    def bytes_sent(self) -> int:
        return getattr(self._conn, "bytes_sent", 0)

    @property
    def bytes_received(self) -> int:
        return getattr(self._conn, "bytes_received", 0)

    def stop(self, reason: str, *, going_away: bool = False) -> None:
        """Ends the session after the message in hand (a push is committed and answered
        first), telling the client ``reason``."""
        self._stopped = (reason, going_away)
        if self._receive_scope is not None and self._receiving:
            self._receive_scope.cancel()

    async def run(self) -> None:
        """Handles the connection; never raises (errors close the connection)."""
        hub = self._hub
        hub.track(self)
        started = time.monotonic()
        reason, code = "", CLOSE_NORMAL
        try:
            reason, code = await self._run()
        except Exception as exc:
            reason = await self._ended_by(exc)
            # Logged and told: what the session's frames hold is freed now, not at the
            # cycle collector's next full run (docs/deploy.md).
            release_frames(exc)
        finally:
            if self.client_id != "?":
                logger.info(
                    "client %r of store %r (%s) disconnected after %.1fs: %s",
                    self.client_id,
                    self.store_id,
                    self.peer,
                    time.monotonic() - started,
                    loggable(reason or "closed"),
                )
            try:
                # Not shielded: when the server is cancelled, connections close at once.
                await self._conn.aclose(reason, code=code)
            finally:
                hub.untrack(self)  # live until closed: a graceful shutdown waits for this

    async def _ended_by(self, failure: Exception) -> str:
        """Logs why the session ended, tells the client when it should know, and returns
        the reason the connection is closed with."""
        hub = self._hub
        if isinstance(failure, Refusal):
            hub.metrics.refusals.labels(failure.code).inc()
            logger.info(
                "refused %s (client %r, store %r): %s",
                self.peer,
                self.client_id,
                self.store_id,
                loggable(failure.reason),
            )
            await self._try_send(
                Error(failure.reason, fatal=failure.fatal, last_client_seq=failure.last_client_seq)
            )
            return failure.reason
        if isinstance(failure, ConnectionClosed):
            return str(failure)
        if isinstance(failure, ProtocolError):
            reason = str(failure)
            hub.metrics.refusals.labels("invalid_message").inc()
            logger.info(
                "client %r of store %r (%s) sent an invalid message: %s",
                self.client_id,
                self.store_id,
                self.peer,
                loggable(reason),
            )
        elif isinstance(failure, StoreError):
            reason = f"server storage failed: {failure}"
            hub.metrics.refusals.labels("storage").inc()
            logger.error("client %r of store %r: %s", self.client_id, self.store_id, reason)
        else:
            # A bug here must cost one connection, never the whole server.
            reason = "internal server error"
            hub.metrics.refusals.labels("internal_error").inc()
            logger.error(
                "client %r of store %r: unexpected error",
                self.client_id,
                self.store_id,
                exc_info=failure,
            )
        await self._try_send(Error(reason))
        return reason

    async def _converse(self, log: StoreLog) -> None:
        """The conversation after the welcome, until it ends: messages read and answered
        here, pushes committed and answered in order by their own task.

        An error of the conversation is raised after the nursery, not through it: a
        nursery whose body raises leaves each cancelled task's Cancelled in a reference
        cycle with the group it makes, and all the session's objects with them, until a
        full run of the cycle collector. A task failing meanwhile is logged; the
        conversation's error is the one reported.
        """
        ended: Exception | None = None
        try:
            with single_exception():
                async with trio.open_nursery() as nursery:
                    self._send_push, pushes = trio.open_memory_channel[Push](PUSHES_QUEUED)
                    answered = trio.Event()
                    nursery.start_soon(self._answer_pushes, pushes, log, answered)
                    try:
                        await self._serve(log, nursery)
                    except Exception as exc:
                        ended = exc
                        nursery.cancel_scope.cancel()
                    else:
                        # Stopping: the pushes already received are committed and answered.
                        self._send_push.close()
                        await answered.wait()
                        nursery.cancel_scope.cancel()
        except Exception as late:
            if ended is None:
                raise
            self._note_late_failure(late)
        if ended is not None:
            raise ended

    def _note_late_failure(self, failure: Exception) -> None:
        """A task of the session failed while it was ending for another reason (which is
        the one reported): say so in the log, then let go of it."""
        if isinstance(failure, TrioSyncError):
            logger.info(
                "client %r of store %r: also, as the session ended: %s",
                self.client_id,
                self.store_id,
                loggable(str(failure)),
            )
        else:
            logger.error(
                "client %r of store %r: unexpected error as the session ended",
                self.client_id,
                self.store_id,
                exc_info=failure,
            )
        release_frames(failure)

    async def _run(self) -> tuple[str, int]:
        hello, log = await self._handshake()
        hub = self._hub
        hub.add_session(self, log, hello.client_id)
        self._conn.admit()
        try:
            await self._send(
                Welcome(
                    protocol_version=PROTOCOL_VERSION,
                    server_id=log.server_id,
                    schema_name=hub.config.schema[0],
                    schema_version=hub.config.schema[1],
                    head=log.head,
                    store_id=log.store_id,
                    limits=self._limits.wire,
                    last_client_seq=self._held,
                )
            )
            logger.info(
                "client %r connected to store %r from %s (head %d)",
                self.client_id,
                self.store_id,
                self.peer,
                log.head,
            )
            expires_at, deadline = self._token_expires
            with trio.move_on_at(deadline) as expiry:
                await self._converse(log)
            if expiry.cancelled_caught:
                raise Refusal(
                    f"not authorized: the token expired at {utc_time(expires_at)}: "
                    "ask for a new one",
                    "token_expired",
                    fatal=True,
                )
        finally:
            hub.remove_session(self, log, hello.client_id)
        assert self._stopped is not None
        reason, going_away = self._stopped
        await self._try_send(Error(reason))
        return reason, CLOSE_GOING_AWAY if going_away else CLOSE_NORMAL

    # --- handshake --------------------------------------------------------------------

    async def _handshake(self) -> tuple[Hello, StoreLog]:
        hub, limits = self._hub, self._limits
        if hub.draining:
            raise Refusal("the server is shutting down", "shutting_down")
        message = None
        # One deadline from the moment the connection was accepted: TLS, the WebSocket
        # handshake and the hello together (a slow head does not buy a slow hello).
        with trio.move_on_at(self._conn.opened_at + limits.hello_timeout):
            message = await self._conn.receive()
        if message is None:
            raise Refusal(f"no hello within {limits.hello_timeout:g}s (hello_timeout)", "timeout")
        if not isinstance(message, Hello):
            raise ProtocolError(f"expected 'hello' first, got {message.TYPE!r}")
        self.client_id = message.client_id
        store_id = store_for_target(self._conn.target)
        if store_id is None:
            raise Refusal(
                f"no store at path {self._conn.target[:80]!r}: connect to / (the default store) "
                "or /<store id> (letters, digits, _ . -)",
                "bad_path",
                fatal=True,
            )
        self.store_id = store_id
        problem = protocol_problem(message)
        if problem:
            raise Refusal(problem, "incompatible", fatal=True)
        # Before anything else is said (the schema, whether the store exists): without a
        # valid token, nothing is learnt.
        try:
            claims = hub.authorize(message.token, store_id=store_id, client_id=message.client_id)
        except TokenError as exc:
            raise Refusal(f"not authorized: {exc}", "unauthorized", fatal=True) from None
        if claims is not None:
            # The connection ends when its token does.
            self._token_expires = (
                claims.expires_at,
                trio.current_time() + (claims.expires_at - time.time()),
            )
        problem = hello_problem(message, hub.config.schema)
        if problem:
            raise Refusal(problem, "incompatible", fatal=True)
        # Before the store is opened: between open_store() and add_session() nothing may
        # wait, or the store's live view could be released in between.
        self._held = await hub.last_client_seq(store_id, message.client_id)
        problem = reused_id_problem(
            message.client_id, committed=message.last_client_seq, held=self._held
        )
        if problem:
            raise Refusal(problem, "client_id_reused", fatal=True, last_client_seq=self._held)
        try:
            log = await hub.open_store(store_id)
        except TooManyStores as exc:
            raise Refusal(str(exc), "too_many_stores") from None
        if log is None:
            raise Refusal(
                f"store {store_id!r} does not exist on this server (a server started with "
                "--create-stores creates stores on first use)",
                "unknown_store",
                fatal=True,
            )
        if log.connections >= limits.max_connections_per_store:
            raise Refusal(
                f"store {store_id!r} has {log.connections} connections: the limit is "
                f"{limits.max_connections_per_store} (max_connections_per_store)",
                "too_many_connections",
            )
        return message, log

    # --- the conversation -------------------------------------------------------------

    async def _serve(self, log: StoreLog, nursery: trio.Nursery) -> None:
        limits = self._limits
        bucket = TokenBucket(limits.messages_per_second, limits.message_burst, trio.current_time())
        # One scope for the whole conversation: its deadline is the idle timeout while a
        # message is awaited and none while one is handled, and stop() cancels it only
        # while a message is awaited (a push in hand is committed and answered first).
        with trio.CancelScope() as self._receive_scope:
            while self._stopped is None:
                self._receiving = True
                delay = bucket.take(trio.current_time())
                if delay:
                    # Too many messages: this client waits; nobody else does.
                    self._receive_scope.deadline = math.inf
                    await trio.sleep(delay)
                self._receive_scope.deadline = trio.current_time() + limits.idle_timeout
                message = await self._conn.receive()
                self._receiving = False
                self._receive_scope.deadline = math.inf
                # Bytes cost too: parsing and checking a large frame takes the server's time.
                received = self.bytes_received
                bucket.charge((received - self._bytes_charged) / BYTES_PER_MESSAGE)
                self._bytes_charged = received
                if isinstance(message, Pull):
                    # A pull makes the server read and send history: it costs as much as
                    # many messages (a client pulls once a connection, and after a loss).
                    bucket.charge(PULL_COST)
                await self._handle(message, log, nursery)
        self._receive_scope = None
        if self._stopped is None:
            raise Refusal(f"nothing received for {limits.idle_timeout:g}s (idle_timeout)", "idle")

    async def _handle(self, message: object, log: StoreLog, nursery: trio.Nursery) -> None:
        if isinstance(message, Push):
            # Answered in order by their own task: pings and pulls read meanwhile are
            # answered while a push commits (a slow disk is no silent connection).
            assert self._send_push is not None
            await self._send_push.send(message)
        elif isinstance(message, Pull):
            if message.cursor > log.head and self._hub.db.shared:
                # The client saw these events through another node, before this one heard
                # of them: read them now rather than refuse.
                await self._hub.catch_up(log)
            if message.cursor > log.head:
                raise ProtocolError(
                    f"pull cursor {message.cursor} is beyond the head {log.head} of store "
                    f"{log.store_id!r}"
                )
            if self._pull_scope is not None:
                self._pull_scope.cancel()
            self._pull_scope = trio.CancelScope()
            nursery.start_soon(self._stream, message, log, self._pull_scope)
        elif isinstance(message, Ping):
            await self._send(Pong(nonce=message.nonce, head=log.head))
        elif isinstance(message, Error):
            raise ConnectionClosed(f"client closed: {message.reason}")
        else:
            raise ProtocolError(f"a client does not send {message.TYPE!r}")  # type: ignore[attr-defined]

    async def _answer_pushes(
        self, pushes: trio.MemoryReceiveChannel[Push], log: StoreLog, answered: trio.Event
    ) -> None:
        async for push in pushes:
            await self._send(await self._answer_push(push, log))
        answered.set()

    async def _answer_push(self, push: Push, log: StoreLog) -> ServerMessage:
        hub = self._hub
        try:
            decision = await hub.push(log, self.client_id, push)
        except StoreFull as exc:
            hub.metrics.pushes.labels("storage_full").inc()
            return PushRejected(
                push.push_id, f"the server's storage is full, retry later: {exc}", retryable=True
            )
        except StoreError as exc:
            hub.metrics.pushes.labels("storage_error").inc()
            return PushRejected(
                push.push_id, f"the server could not write, retry later: {exc}", retryable=True
            )
        except InternalError:
            raise
        if isinstance(decision, Accept):
            return PushAck(
                push_id=push.push_id,
                first_client_seq=push.events[0].client_seq,
                seqs=decision.seqs,
            )
        if isinstance(decision, Ahead):
            return ServerAhead(push_id=push.push_id, head=decision.head)
        return PushRejected(push_id=push.push_id, reason=decision.reason)

    async def _stream(self, pull: Pull, log: StoreLog, scope: trio.CancelScope) -> None:
        hub = self._hub
        budget = PageBudget(
            smallest=FIRST_PAGE_BYTES,
            largest=max(FIRST_PAGE_BYTES, self._limits.page_events_budget),
        )
        with scope:
            cursor = pull.cursor
            first = True
            while True:
                await log.wait_beyond(cursor)
                # The next page is read only when it can be queued at once, and it is small
                # when the client is slow to read: a client that stops reading holds little.
                waited = await self._wait_room_for_page()
                if not first:
                    budget.after_send(waited=waited)
                first = False
                events = await hub.read(log, cursor, budget.bytes)
                await self._send(
                    PullPage(pull_id=pull.pull_id, events=tuple(events), head=log.head)
                )
                cursor = events[-1].seq  # type: ignore[assignment]
                hub.metrics.pull_lag.observe(log.head - cursor)

    async def _wait_room_for_page(self) -> bool:
        if self._conn.queues_at_once(PullPage):
            return False  # no timer: the usual case, once per reader and event
        waited = False
        with trio.move_on_after(self._limits.send_timeout) as scope:
            waited = await self._conn.wait_room_for_page()
        if scope.cancelled_caught:
            self._hub.metrics.refusals.labels("too_slow").inc()
            raise ConnectionClosed(
                f"client {self.client_id!r} too slow: a page waited over "
                f"{self._limits.send_timeout:g}s to be sent (send_timeout)"
            )
        return waited

    async def _send(self, message: ServerMessage) -> None:
        if self._conn.queues_at_once(type(message)):
            await self._conn.send(message)  # queued at once: no timer needed
            return
        with trio.move_on_after(self._limits.send_timeout) as scope:
            await self._conn.send(message)
        if scope.cancelled_caught:
            self._hub.metrics.refusals.labels("too_slow").inc()
            raise ConnectionClosed(
                f"client {self.client_id!r} too slow: a send waited over "
                f"{self._limits.send_timeout:g}s (send_timeout)"
            )

    async def _try_send(self, message: ServerMessage) -> None:
        # Shielded (we may be closing because of a cancellation) but bounded in time.
        with (
            trio.CancelScope(deadline=trio.current_time() + 1, shield=True),
            contextlib.suppress(TrioSyncError),
        ):
            await self._conn.send(message)
