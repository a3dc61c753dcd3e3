"""The WebSocket transport (trio-websocket): one message per frame, JSON text frames and
binary frames for blob chunks (see ``protocol/_blob_messages.py``)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._errors import ConnectError, ConnectionClosed, HandshakeRefused, InvalidURL
from .._groups import single_exception
from ..protocol import (
    CLIENT_RECEIVE_LIMITS,
    Message,
    PullPage,
    WireLimits,
    decode,
    encode_frame,
    utf8_length,
)
from ..protocol._blob_messages import BlobChunk, UploadEnd
from ._base import CLOSE_NORMAL
from ._outbox import Outbox

# Chunks queue like pages: one at a time, so a file never piles up in memory (and the end
# of an upload after its chunks, never before).
_BULK = (PullPage, BlobChunk, UploadEnd)

#: Seconds allowed for the TCP + WebSocket handshake, and for the closing handshake.
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
#: Bytes read from the socket at a time (trio-websocket's 4 KiB default costs a system
#: call per 4 KiB of a large page).
RECEIVE_BUFFER = 64 * 1024
#: The largest frame a server accepts before the peer said a valid hello: a hello is a
#: few hundred bytes (a token at most 4 KiB), and nobody unknown gets to make the server
#: hold megabytes.
HELLO_FRAME_LIMIT = 64 * 1024
#: Text frames larger than this are decoded in a worker thread (a binary frame, a blob
#: chunk, decodes in microseconds whatever its size: it is a header and a slice).
DECODE_IN_THREAD_ABOVE = 256 * 1024


def describe_close(reason: trio_websocket.CloseReason | None) -> str:
    """A closed WebSocket's code and reason, in words."""
    if reason is None:
        return "connection closed"
    text = f"connection closed ({reason.code} {reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text


class WebSocketConnection:
    """A :class:`~trio_sync.transport.Connection` over a trio-websocket connection.

    Sends go through an :class:`Outbox` and one writer task that runs in ``nursery`` (the
    connection's own, which also runs the library's reader task).
    """

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        nursery: trio.Nursery,
        *,
        limits: WireLimits = CLIENT_RECEIVE_LIMITS,
        target: str = "",
        peer: str = "",
        opened_at: float | None = None,
    ) -> None:
        self._ws = ws
        self._limits = limits
        self._outbox = Outbox()
        #: Set once a close is under way; set again (``is_set``) when it has ended.
        self._closing: trio.Event | None = None
        self.target = target
        self.peer = peer
        self.opened_at = trio.current_time() if opened_at is None else opened_at
        #: Bytes of frames sent and received (for metrics).
        self.bytes_sent = 0
        self.bytes_received = 0
        nursery.start_soon(self._write_frames)

    @property
    def close_reason(self) -> trio_websocket.CloseReason | None:
        return self._ws.closed

    def admit(self) -> None:
        """The peer passed the handshake: accept frames up to the full limit. (A server
        connection starts with :data:`HELLO_FRAME_LIMIT`; trio-websocket keeps the limit
        in an attribute of its connection, which a test watches.)"""
        self._ws._max_message_size = self._limits.max_frame_bytes

    def queues_at_once(self, kind: type[Message]) -> bool:
        outbox = self._outbox
        return outbox.closed is None and outbox.has_room(bulk=issubclass(kind, _BULK))

    async def send(self, message: Message) -> None:
        frame = encode_frame(message)
        await self._outbox.put(frame, bulk=isinstance(message, _BULK))

    async def _write_frames(self) -> None:
        outbox = self._outbox
        try:
            while True:
                frame = await outbox.take()
                await self._ws.send_message(frame)
                self.bytes_sent += len(frame)
                outbox.written()
        except trio_websocket.ConnectionClosed as exc:
            outbox.close(describe_close(exc.reason))
        except ConnectionClosed:
            pass

    async def receive(self) -> Message:
        try:
            frame = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = describe_close(exc.reason)
            self._outbox.close(reason)
            raise ConnectionClosed(reason) from None
        self.bytes_received += utf8_length(frame) if isinstance(frame, str) else len(frame)
        if isinstance(frame, str) and len(frame) > DECODE_IN_THREAD_ABOVE:
            # A frame this large takes milliseconds to parse and check: in a worker
            # thread, the event loop keeps serving everyone else meanwhile.
            return await trio.to_thread.run_sync(decode, frame, self._limits)
        return decode(frame, self._limits)

    async def wait_room_for_page(self) -> bool:
        """Returns once a page would be queued at once (one waits at most): a stream
        builds its next page only then, so a client that stops reading holds up one
        page of the server's memory, not more. True if it had to wait."""
        return await self._outbox.wait_room(bulk=True)

    async def aclose(self, reason: str = "", *, code: int = CLOSE_NORMAL) -> None:
        if self._closing is not None:
            # Another task is closing: wait until its handshake ends (it is bounded). The
            # library returns at once: whoever owns the connection would then cancel its
            # reader task, and the first closer would wait for a reply nobody reads.
            await self._closing.wait()
            return
        self._closing = trio.Event()
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._outbox.wait_empty()
                self._outbox.close(reason or "connection closed")
                # A close reason must fit a control frame (125 bytes with the code).
                short = reason.encode()[:120].decode(errors="ignore") or None
                await self._ws.aclose(code=code, reason=short)
        finally:
            self._outbox.close(reason or "connection closed")
            self._closing.set()


def parse_ws_url(url: str) -> tuple[str, int, str, bool]:
    """Splits a server URL into host, port, resource and whether it uses TLS.

    Raises:
        InvalidURL: Not a ``ws://`` or ``wss://`` URL with a host and a valid port.
    """
    if not isinstance(url, str):
        raise InvalidURL(f"a server URL is a string like 'ws://host:port', not {url!r}")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise InvalidURL(f"{url!r} is not a server URL: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not hostname:
        raise InvalidURL(
            f"{url!r} is not a server URL: use ws://host:port[/store] (or wss:// for TLS)"
        )
    secure = parts.scheme == "wss"
    try:
        given = parts.port
    except ValueError:
        given = -1
    if given is not None and not 1 <= given <= 65535:
        raise InvalidURL(f"{url!r} has an invalid port (1-65535)")
    port = given or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return hostname, port, resource, secure


@asynccontextmanager
async def connect_websocket(
    url: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Opens a WebSocket connection to ``url`` (``ws://host:port[/store]`` or ``wss://``).

    The TCP stream is ours, not the library's, so that it is closed on every path (a
    cancellation in the middle of the opening handshake included).

    Args:
        url: Where to connect.
        connect_timeout: Seconds for TCP, TLS and the WebSocket handshake each.
        ssl_context: For ``wss://``: how to check the server (the system's trusted
            certificates by default).

    Raises:
        ConnectError: The server could not be reached or refused the handshake.
    """
    host, port, resource, secure = parse_ws_url(url)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectError(f"no answer from {url} within {connect_timeout:g}s") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {url}: {exc.strerror or exc}") from None
    if secure:
        stream = await _start_tls(stream, url, host, connect_timeout, ssl_context)
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
                connection = WebSocketConnection(ws, nursery, peer=url)
                try:
                    yield connection
                finally:
                    # A normal exit closes with the closing handshake. Leaving because of
                    # a cancellation closes at once: the library's reader task is
                    # cancelled too, so a shielded handshake could only time out.
                    await connection.aclose()
                    nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as exc:
        # Raised by the library's reader task, so it arrives here, not from the handshake
        # call: an HTTP answer that is not an upgrade (a proxy's 404, a full server's 503).
        body = (exc.body or b"").decode(errors="replace").strip()
        raise HandshakeRefused(
            f"{url} answered HTTP {exc.status_code} instead of a WebSocket handshake"
            f"{f': {body[:200]}' if body else ''}"
        ) from None
    except trio_websocket.HandshakeError as exc:
        raise HandshakeRefused(f"{url} refused the WebSocket handshake: {exc}") from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _start_tls(
    tcp: trio.SocketStream,
    url: str,
    host: str,
    seconds_allowed: float,
    ssl_context: ssl.SSLContext | None,
) -> trio.SSLStream[trio.SocketStream]:
    """TLS over an open TCP stream; on any failure the TCP stream is closed."""
    context = ssl_context or ssl.create_default_context()
    stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
    try:
        with trio.fail_after(seconds_allowed):
            await stream.do_handshake()
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await tcp.aclose()
        if isinstance(exc, trio.TooSlowError):
            raise ConnectError(f"no TLS handshake from {url} within {seconds_allowed:g}s") from None
        if isinstance(exc, trio.BrokenResourceError):
            cause = exc.__cause__ or exc
            raise ConnectError(f"TLS handshake with {url} failed: {cause}") from None
        raise
    return stream


class _EndWatched(trio.abc.Stream):
    """A stream that notes when the peer closes it (trio-websocket's client keeps waiting
    for a handshake answer that cannot come any more)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.ended = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = bytes(await self._stream.receive_some(max_bytes))
        except trio.BrokenResourceError:
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _open_handshake(
    nursery: trio.Nursery,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    url: str,
    host: str,
    port: int,
    resource: str,
) -> trio_websocket.WebSocketConnection:
    host_header = host if port in (80, 443) else f"{host}:{port}"
    watched = _EndWatched(stream)
    ws: trio_websocket.WebSocketConnection | None = None
    try:
        async with trio.open_nursery() as race:

            async def closed_early() -> None:
                await watched.ended.wait()
                race.cancel_scope.cancel()

            race.start_soon(closed_early)
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                watched,  # type: ignore[arg-type]  # any trio Stream works
                host_header,
                resource,
                max_message_size=CLIENT_RECEIVE_LIMITS.max_frame_bytes,
                receive_buffer_size=RECEIVE_BUFFER,
            )
            race.cancel_scope.cancel()
    except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
        raise HandshakeRefused(f"{url} refused the WebSocket handshake: {exc}") from None
    if ws is None:
        hint = " (if it serves TLS, use wss://)" if url.startswith("ws:") else ""
        raise HandshakeRefused(f"{url} closed the connection during the WebSocket handshake{hint}")
    if ws.closed is not None:
        raise HandshakeRefused(
            f"{url} refused the WebSocket handshake: {describe_close(ws.closed)}"
        )
    return ws
