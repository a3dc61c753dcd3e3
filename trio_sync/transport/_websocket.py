"""The WebSocket transport (trio-websocket): JSON text frames, one message per frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from .._errors import ConnectError, ConnectionClosed, TransportError
from ..protocol import MAX_FRAME_BYTES, Message, decode, encode
from ._base import ConnectionHandler

#: Seconds allowed for the TCP + WebSocket handshake, and for the closing handshake.
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


def _describe(reason: trio_websocket.CloseReason | None) -> str:
    if reason is None:
        return "connection closed"
    text = f"connection closed ({reason.code} {reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


class WebSocketConnection:
    """A :class:`~trio_sync.transport.Connection` over a trio-websocket connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, message: Message) -> None:
        try:
            await self._ws.send_message(encode(message))
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(_describe(exc.reason)) from None

    async def receive(self) -> Message:
        try:
            frame = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(_describe(exc.reason)) from None
        return decode(frame)

    async def aclose(self, reason: str = "") -> None:
        with trio.move_on_after(CLOSE_TIMEOUT):
            # A close reason must fit a control frame (125 bytes with the code).
            short = reason.encode()[:120].decode(errors="ignore") or None
            await self._ws.aclose(code=1000, reason=short)


@asynccontextmanager
async def connect_websocket(
    url: str, *, connect_timeout: float = CONNECT_TIMEOUT
) -> AsyncIterator[WebSocketConnection]:
    """Opens a WebSocket connection to ``url`` (``ws://host:port``).

    Raises:
        ConnectError: The server could not be reached or refused the handshake.
    """
    opened = False
    try:
        async with trio_websocket.open_websocket_url(
            url,
            max_message_size=MAX_FRAME_BYTES,
            connect_timeout=connect_timeout,
            disconnect_timeout=CLOSE_TIMEOUT,
        ) as ws:
            opened = True
            connection = WebSocketConnection(ws)
            try:
                yield connection
            finally:
                # Say goodbye properly even when leaving because of a cancellation (the
                # library's own close would be cancelled and look abnormal to the server).
                with trio.CancelScope(shield=True):
                    await connection.aclose()
    except trio_websocket.ConnectionTimeout:
        if opened:
            raise
        raise ConnectError(f"no answer from {url} within {connect_timeout:g}s") from None
    except trio_websocket.ConnectionRejected as exc:
        raise ConnectError(f"{url} refused the WebSocket handshake: {exc}") from None
    except trio_websocket.DisconnectionTimeout:
        if not opened:
            raise ConnectError(f"cannot connect to {url}: closed during the handshake") from None
        # The closing handshake timed out: the connection is gone either way.
    except (trio_websocket.HandshakeError, OSError, ValueError) as exc:
        if opened:
            raise
        cause = exc.__cause__ or exc
        raise ConnectError(f"cannot connect to {url}: {cause}") from None


async def serve_websocket(
    handler: ConnectionHandler,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accepts WebSocket connections and runs ``handler`` for each, until cancelled.

    Calls ``task_status.started(port)`` with the bound port once listening.

    Raises:
        TransportError: The address cannot be bound (port in use, unknown host).
    """

    async def on_request(request: trio_websocket.WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except trio_websocket.ConnectionClosed:
            return
        await handler(WebSocketConnection(ws))

    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = trio_websocket.WebSocketServer(
        on_request, listeners, max_message_size=MAX_FRAME_BYTES, connect_timeout=CONNECT_TIMEOUT
    )
    bound = server.port
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(bound)
