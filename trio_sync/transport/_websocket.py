"""The WebSocket transport (trio-websocket): JSON text frames, one message per frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._errors import ConnectError, ConnectionClosed, TransportError
from .._groups import single_exception
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


def _parse_url(url: str) -> tuple[str, int, str, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectError(f"{url!r} is not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ConnectError(f"{url!r} has an invalid port") from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return parts.hostname, port, resource, secure


@asynccontextmanager
async def connect_websocket(
    url: str, *, connect_timeout: float = CONNECT_TIMEOUT
) -> AsyncIterator[WebSocketConnection]:
    """Opens a WebSocket connection to ``url`` (``ws://host:port`` or ``wss://...``).

    The TCP stream is ours, not the library's, so that it is closed on every path (a
    cancellation in the middle of the opening handshake included).

    Raises:
        ConnectError: The server could not be reached or refused the handshake.
    """
    host, port, resource, secure = _parse_url(url)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_timeout):
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(host, port, https_compatible=True)
            else:
                stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectError(f"no answer from {url} within {connect_timeout:g}s") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {url}: {exc.strerror or exc}") from None
    try:
        with single_exception():
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(connect_timeout):
                        ws = await _open_handshake(nursery, stream, url, host, port, resource)
                except trio.TooSlowError:
                    raise ConnectError(
                        f"no WebSocket handshake from {url} within {connect_timeout:g}s"
                    ) from None
                connection = WebSocketConnection(ws)
                try:
                    yield connection
                finally:
                    # A normal exit closes with the closing handshake. Leaving because of
                    # a cancellation closes at once: the library's reader task is
                    # cancelled too, so a shielded handshake could only time out.
                    await connection.aclose()
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _open_handshake(
    nursery: trio.Nursery,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    url: str,
    host: str,
    port: int,
    resource: str,
) -> trio_websocket.WebSocketConnection:
    host_header = host if port in (80, 443) else f"{host}:{port}"
    try:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, host_header, resource, max_message_size=MAX_FRAME_BYTES
        )
    except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        raise ConnectError(f"{url} refused the WebSocket handshake: {exc}") from None
    if ws.closed is not None:
        raise ConnectError(f"{url} refused the WebSocket handshake: {_describe(ws.closed)}")
    return ws


async def serve_websocket(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
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
