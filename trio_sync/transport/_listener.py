"""Accepting connections: TCP, optional TLS, then WebSocket or plain HTTP on one port.

The listener reads each request's head itself (with h11) before trio-websocket sees it, so
the same port can answer plain HTTP requests (``GET /healthz``, ``GET /metrics``) and
refuse early what it cannot serve. A WebSocket upgrade is then handed to trio-websocket
with the bytes already read put back in front of the stream.

Everything before the WebSocket exists (TLS handshake, request head) must finish within
``handshake_timeout``, so a peer that connects and sends nothing costs a socket for a few
seconds, not for ever.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import h11
import trio
import trio_websocket

from ..protocol import CLIENT_RECEIVE_LIMITS, WireLimits
from ._base import ConnectionHandler
from ._websocket import RECEIVE_BUFFER, WebSocketConnection

logger = logging.getLogger("trio_sync.server")

#: The most bytes a request head may take before the request is refused.
MAX_REQUEST_HEAD = 16 * 1024


@attrs.frozen
class HttpRequest:
    """A plain HTTP request (not a WebSocket upgrade)."""

    method: str
    target: str
    headers: dict[str, str]


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: Answers a plain HTTP request.
HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def _not_found(request: HttpRequest) -> HttpResponse:
    return HttpResponse(404, b"not found: this is a trio_sync WebSocket server\n")


class _Replay(trio.abc.Stream):
    """A stream that first returns bytes already read from ``stream``, then the rest."""

    def __init__(self, stream: trio.abc.Stream, already_read: bytes) -> None:
        self._stream = stream
        self._pending = already_read

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._pending:
            size = len(self._pending) if max_bytes is None else max_bytes
            chunk, self._pending = self._pending[:size], self._pending[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _reason_phrase(status: int) -> str:
    return {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}.get(
        status, "Error"
    )


async def _respond(stream: trio.abc.Stream, response: HttpResponse) -> None:
    head = (
        f"HTTP/1.1 {response.status} {_reason_phrase(response.status)}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    await stream.send_all(head.encode("latin-1") + response.body)


async def _read_request_head(stream: trio.abc.Stream) -> tuple[h11.Request, bytes]:
    """Reads until h11 has a whole request head; returns it and every byte read.

    Raises:
        h11.RemoteProtocolError: Not an HTTP request, or a head over the size limit.
        EOFError: The peer closed first.
    """
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    raw = bytearray()
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Request):
            return event, bytes(raw)
        if event is not h11.NEED_DATA:
            raise h11.RemoteProtocolError("expected an HTTP request")
        data = bytes(await stream.receive_some(MAX_REQUEST_HEAD))
        if not data:
            raise EOFError("the peer closed before sending a request")
        raw += data
        parser.receive_data(data)


def _is_upgrade(headers: dict[str, str]) -> bool:
    return headers.get("upgrade", "").lower() == "websocket" and "upgrade" in (
        headers.get("connection", "").lower()
    )


@attrs.define
class ListenerConfig:
    """How a listener accepts connections."""

    handshake_timeout: float = 10.0
    #: Open TCP connections at most (past it, new ones are answered 503 and closed).
    max_connections: int = 10_000
    limits: WireLimits = CLIENT_RECEIVE_LIMITS
    ssl_context: ssl.SSLContext | None = None


class Listener:
    """Serves one listening port: see the module's description."""

    def __init__(
        self, handler: ConnectionHandler, http_handler: HttpHandler | None, config: ListenerConfig
    ) -> None:
        self._handler = handler
        self._http_handler = http_handler or _not_found
        self._config = config
        #: TCP connections open now.
        self.open_connections = 0

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """Runs one accepted TCP connection to its end; never raises."""
        peer = _peer_name(stream)
        config = self._config
        self.open_connections += 1
        try:
            if self.open_connections > config.max_connections:
                logger.info(
                    "refused a connection from %s: %d connections open (max_connections)",
                    peer,
                    config.max_connections,
                )
                with trio.move_on_after(1):
                    await _respond(
                        stream,
                        HttpResponse(
                            503,
                            f"too many connections: the limit is {config.max_connections} "
                            "(max_connections)\n".encode(),
                        ),
                    )
                return
            await self._serve(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            pass
        finally:
            self.open_connections -= 1
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _serve(self, stream: trio.SocketStream, peer: str) -> None:
        config = self._config
        opened: trio.abc.Stream = stream
        with trio.move_on_after(config.handshake_timeout) as timeout:
            if config.ssl_context is not None:
                opened = trio.SSLStream(stream, config.ssl_context, server_side=True)
                await opened.do_handshake()
            try:
                request, raw = await _read_request_head(opened)
            except h11.RemoteProtocolError as exc:
                logger.info("refused a connection from %s: bad HTTP request (%s)", peer, exc)
                await _respond(opened, HttpResponse(400, f"bad request: {exc}\n".encode()))
                return
        if timeout.cancelled_caught:
            logger.info(
                "closed a connection from %s: no request within %gs (handshake_timeout)",
                peer,
                config.handshake_timeout,
            )
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        if not _is_upgrade(headers):
            response = await self._http_handler(
                HttpRequest(request.method.decode("latin-1"), request.target.decode(), headers)
            )
            await _respond(opened, response)
            return
        async with trio.open_nursery() as nursery:
            ws_request = await trio_websocket.wrap_server_stream(
                nursery,
                _Replay(opened, raw),
                max_message_size=config.limits.max_frame_bytes,
                receive_buffer_size=RECEIVE_BUFFER,
            )
            try:
                ws = await ws_request.accept()
            except trio_websocket.ConnectionClosed:
                nursery.cancel_scope.cancel()
                return
            connection = WebSocketConnection(
                ws, nursery, limits=config.limits, target=ws_request.path, peer=peer
            )
            try:
                await self._handler(connection)
            finally:
                await connection.aclose()
                nursery.cancel_scope.cancel()


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def serve_websocket(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    http_handler: HttpHandler | None = None,
    config: ListenerConfig | None = None,
    stop_accepting: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accepts connections and runs ``handler`` for each WebSocket.

    Calls ``task_status.started(port)`` with the bound port once listening. Runs until
    cancelled; or, once ``stop_accepting`` is set, closes the listening socket and returns
    when the connections already open have ended.

    Raises:
        OSError: The address cannot be bound (port in use, unknown host); the caller
            decides whether to try another port.
    """
    listener = Listener(handler, http_handler, config or ListenerConfig())
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as connections, trio.open_nursery() as acceptors:
        await acceptors.start(
            partial(
                trio.serve_listeners,
                listener.handle_stream,
                listeners,
                handler_nursery=connections,
            )
        )
        task_status.started(bound)
        if stop_accepting is None:
            await trio.sleep_forever()
        await stop_accepting.wait()
        acceptors.cancel_scope.cancel()
