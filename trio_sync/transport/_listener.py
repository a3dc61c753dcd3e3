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
from ._websocket import HELLO_FRAME_LIMIT, RECEIVE_BUFFER, WebSocketConnection

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
    #: Content-Length when it is not the body's (a HEAD answer has none).
    length: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


#: Answers a plain HTTP request.
HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def _not_found(request: HttpRequest) -> HttpResponse:
    return HttpResponse(404, b"not found: this is a trio_sync WebSocket server\n")


class _Replay(trio.abc.Stream):
    """A stream that first returns bytes already read from ``stream``, then the rest; it
    notes when its user closes it (trio-websocket does, after refusing a handshake)."""

    def __init__(self, stream: trio.abc.Stream, already_read: bytes) -> None:
        self._stream = stream
        self._pending = already_read
        self.closed = trio.Event()

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
        self.closed.set()
        await self._stream.aclose()


def _reason_phrase(status: int) -> str:
    return {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        405: "Method Not Allowed",
        503: "Service Unavailable",
    }.get(status, "Error")


async def _respond(stream: trio.abc.Stream, response: HttpResponse) -> None:
    length = len(response.body) if response.length is None else response.length
    extra = "".join(f"{name}: {value}\r\n" for name, value in response.headers)
    head = (
        f"HTTP/1.1 {response.status} {_reason_phrase(response.status)}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {length}\r\n"
        f"{extra}Connection: close\r\n\r\n"
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
        if len(raw) > MAX_REQUEST_HEAD and b"\r\n\r\n" not in raw[: MAX_REQUEST_HEAD + 4]:
            raise h11.RemoteProtocolError(f"request head over {MAX_REQUEST_HEAD} bytes")
        parser.receive_data(data)


def _is_upgrade(headers: dict[str, str]) -> bool:
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    return headers.get("upgrade", "").strip().lower() == "websocket" and "upgrade" in tokens


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
        except Exception:
            # A bug here must cost one connection, never the whole server.
            logger.exception("unexpected error on a connection from %s", peer)
        finally:
            self.open_connections -= 1
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _serve(self, stream: trio.SocketStream, peer: str) -> None:
        config = self._config
        opened_at = trio.current_time()
        deadline = opened_at + config.handshake_timeout
        opened: trio.abc.Stream = stream
        with trio.move_on_at(deadline) as timeout:
            if config.ssl_context is not None:
                opened = trio.SSLStream(stream, config.ssl_context, server_side=True)
                try:
                    await opened.do_handshake()
                except trio.BrokenResourceError as exc:
                    cause = exc.__cause__ or exc
                    logger.info(
                        "refused a connection from %s: TLS handshake failed (%s)", peer, cause
                    )
                    return
            try:
                request, raw = await _read_request_head(opened)
            except h11.RemoteProtocolError as exc:
                logger.info("refused a connection from %s: bad HTTP request (%s)", peer, exc)
                await _respond(opened, HttpResponse(400, f"bad request: {exc}\n".encode()))
                return
        if timeout.cancelled_caught:
            logger.info(
                "closed a connection from %s: no request within %gs (hello_timeout)",
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
            if request.method == b"HEAD":
                response = attrs.evolve(response, body=b"", length=len(response.body))
            await _respond(opened, response)
            return
        async with trio.open_nursery() as nursery:
            replay = _Replay(opened, raw)
            ws = await self._upgrade(nursery, replay, peer, deadline)
            if ws is None:
                nursery.cancel_scope.cancel()
                return
            connection = WebSocketConnection(
                ws,
                nursery,
                limits=config.limits,
                target=ws_request_path(ws),
                peer=peer,
                opened_at=opened_at,
            )
            try:
                await self._handler(connection)
            finally:
                await connection.aclose()
                nursery.cancel_scope.cancel()

    async def _upgrade(
        self, nursery: trio.Nursery, replay: _Replay, peer: str, deadline: float
    ) -> trio_websocket.WebSocketConnection | None:
        """The WebSocket handshake, within the connection's deadline. A request the
        library refuses (no key, another version, a POST) ends here, at once."""
        ws: trio_websocket.WebSocketConnection | None = None
        with trio.move_on_at(deadline) as timeout:
            async with trio.open_nursery() as watch:

                async def refused() -> None:
                    await replay.closed.wait()
                    watch.cancel_scope.cancel()

                watch.start_soon(refused)
                try:
                    request = await trio_websocket.wrap_server_stream(
                        nursery,
                        replay,
                        max_message_size=HELLO_FRAME_LIMIT,
                        receive_buffer_size=RECEIVE_BUFFER,
                    )
                    ws = await request.accept()
                except trio_websocket.ConnectionClosed:
                    ws = None
                watch.cancel_scope.cancel()
        if timeout.cancelled_caught:
            logger.info("closed a connection from %s: no WebSocket handshake in time", peer)
            return None
        if ws is None or replay.closed.is_set():
            logger.info("refused a connection from %s: invalid WebSocket upgrade request", peer)
            return None
        return ws


def ws_request_path(ws: trio_websocket.WebSocketConnection) -> str:
    return ws.path or "/"


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
