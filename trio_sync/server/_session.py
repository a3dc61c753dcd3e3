"""One client connection on the server: handshake, pushes, a pull stream, pings."""

from __future__ import annotations

import contextlib
import logging

import attrs
import trio

from .._errors import ConnectionClosed, ProtocolError, StoreError
from .._groups import single_exception
from ..protocol import (
    PROTOCOL_VERSION,
    Accept,
    Ahead,
    Error,
    Hello,
    Ping,
    Pong,
    Pull,
    PullPage,
    Push,
    PushAck,
    PushRejected,
    ServerAhead,
    ServerMessage,
    Welcome,
    hello_problem,
)
from ..transport import Connection
from ._log import ServerLog

logger = logging.getLogger("trio_sync.server")


@attrs.frozen
class ServerConfig:
    """What a server says about itself, and its limits."""

    server_id: str
    schema_name: str = "default"
    schema_version: int = 1
    #: Events per pull page.
    page_size: int = 500
    #: Seconds a client has to say hello.
    handshake_timeout: float = 10.0
    #: Seconds one send may take before the client counts as too slow and is dropped
    #: (it reconnects and catches up by pulling).
    send_timeout: float = 30.0


class ServerSession:
    """Serves one connection until it closes."""

    def __init__(self, conn: Connection, log: ServerLog, config: ServerConfig) -> None:
        self._conn = conn
        self._log = log
        self._config = config
        self._pull_scope: trio.CancelScope | None = None
        self.client_id = "?"

    async def run(self) -> None:
        """Handles the connection; never raises (errors close the connection)."""
        reason = ""
        try:
            hello = await self._handshake()
            if hello is not None:
                self.client_id = hello.client_id
                with single_exception():
                    async with trio.open_nursery() as nursery:
                        await self._serve(nursery)
        except ConnectionClosed:
            pass
        except ProtocolError as exc:
            reason = str(exc)
            logger.info("client %s sent an invalid message: %s", self.client_id, exc)
            await self._try_send(Error(reason))
        except StoreError as exc:
            reason = f"server storage failed: {exc}"
            logger.error("client %s: %s", self.client_id, reason)
            await self._try_send(Error(reason))
        except Exception:
            # A bug here must cost one connection, never the whole server.
            reason = "internal server error"
            logger.exception("client %s: unexpected error", self.client_id)
            await self._try_send(Error(reason))
        finally:
            # Not shielded: when the server is cancelled, connections close at once.
            await self._conn.aclose(reason)

    async def _handshake(self) -> Hello | None:
        config = self._config
        with trio.move_on_after(config.handshake_timeout):
            message = await self._conn.receive()
            if not isinstance(message, Hello):
                raise ProtocolError(f"expected 'hello' first, got {message.TYPE!r}")
            problem = hello_problem(message, (config.schema_name, config.schema_version))
            if problem:
                await self._try_send(Error(problem, fatal=True))
                return None
            await self._send(
                Welcome(
                    protocol_version=PROTOCOL_VERSION,
                    server_id=config.server_id,
                    schema_name=config.schema_name,
                    schema_version=config.schema_version,
                    head=self._log.head,
                )
            )
            return message
        return None  # no hello in time

    async def _serve(self, nursery: trio.Nursery) -> None:
        while True:
            message = await self._conn.receive()
            if isinstance(message, Push):
                await self._send(await self._answer_push(message))
            elif isinstance(message, Pull):
                if self._pull_scope is not None:
                    self._pull_scope.cancel()
                self._pull_scope = trio.CancelScope()
                nursery.start_soon(self._stream, message, self._pull_scope)
            elif isinstance(message, Ping):
                await self._send(Pong(nonce=message.nonce, head=self._log.head))
            elif isinstance(message, Error):
                logger.info("client %s closed: %s", self.client_id, message.reason)
                raise ConnectionClosed(message.reason)
            else:
                raise ProtocolError(f"a client does not send {message.TYPE!r}")

    async def _answer_push(self, push: Push) -> ServerMessage:
        decision = await self._log.push(self.client_id, push)
        if isinstance(decision, Accept):
            return PushAck(
                push_id=push.push_id,
                first_client_seq=push.events[0].client_seq,
                seqs=decision.seqs,
            )
        if isinstance(decision, Ahead):
            return ServerAhead(push_id=push.push_id, head=decision.head)
        return PushRejected(push_id=push.push_id, reason=decision.reason)

    async def _stream(self, pull: Pull, scope: trio.CancelScope) -> None:
        with scope:
            cursor = pull.cursor
            while True:
                await self._log.wait_beyond(cursor)
                events = await self._log.read(cursor, self._config.page_size)
                await self._send(
                    PullPage(pull_id=pull.pull_id, events=tuple(events), head=self._log.head)
                )
                cursor = events[-1].seq  # type: ignore[assignment]

    async def _send(self, message: ServerMessage) -> None:
        with trio.move_on_after(self._config.send_timeout) as scope:
            await self._conn.send(message)
        if scope.cancelled_caught:
            raise ConnectionClosed(
                f"client {self.client_id} too slow: send took over {self._config.send_timeout:g}s"
            )

    async def _try_send(self, message: ServerMessage) -> None:
        # Shielded (we may be closing because of a cancellation) but bounded in time.
        with (
            trio.CancelScope(deadline=trio.current_time() + 1, shield=True),
            contextlib.suppress(ConnectionClosed),
        ):
            await self._conn.send(message)
