"""trio_sync's wire protocol spoken directly, for what a full client cannot do cheaply:
filling a server's log fast, hundreds of light readers, and abusive connections.

Every frame is built with ``trio_sync.protocol.encode`` (and read with ``decode``), so
these follow protocol changes instead of hard-coding today's JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request, TextMessage

from trio_sync.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Event,
    Hello,
    Message,
    Pull,
    PullPage,
    Push,
    PushAck,
    Welcome,
    decode,
    encode,
)

EVENT_NAME = "bench.event"


def hello(client_id: str, cursor: int = 0) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        client_id=client_id,
        schema_name="default",
        schema_version=1,
        server_id=None,
        cursor=cursor,
    )


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class WireClient:
    """One trio-websocket connection that has said hello and got its welcome."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, welcome: Welcome) -> None:
        self.ws = ws
        self.welcome = welcome

    async def send(self, message: Message) -> None:
        await self.ws.send_message(encode(message))

    async def receive(self) -> Message:
        return decode(await self.ws.get_message())


@asynccontextmanager
async def open_wire_client(url: str, client_id: str, cursor: int = 0) -> AsyncIterator[WireClient]:
    async with trio_websocket.open_websocket_url(url, max_message_size=MAX_FRAME_BYTES) as ws:
        await ws.send_message(encode(hello(client_id, cursor)))
        welcome = decode(await ws.get_message())
        if not isinstance(welcome, Welcome):
            raise RuntimeError(f"expected a welcome, got {welcome!r}")
        yield WireClient(ws, welcome)


async def prefill(
    url: str,
    count: int,
    make_args: Callable[[int], dict[str, Any]],
    *,
    batch: int = 1000,
) -> int:
    """Appends ``count`` events to the server's log in pushes of ``batch`` events, each
    acknowledged before the next; returns the server's head afterwards.

    Far faster than committing through a client (one fsync per push, not per event), and
    it goes through the server's public front door, not its files.
    """
    client_id = unique_id("prefill")
    async with open_wire_client(url, client_id) as client:
        parent: int = client.welcome.head
        for push_id, first in enumerate(range(0, count, batch), start=1):
            events = tuple(
                Event(name=EVENT_NAME, args=make_args(i), client_id=client_id, client_seq=i + 1)
                for i in range(first, min(count, first + batch))
            )
            await client.send(Push(push_id=push_id, parent=parent, events=events))
            reply = await client.receive()
            if not isinstance(reply, PushAck):
                raise RuntimeError(f"prefill push refused: {reply!r}")
            parent = reply.seqs[-1]
    return parent


async def read_pages(client: WireClient, cursor: int) -> AsyncIterator[PullPage]:
    """Pulls from ``cursor`` and yields every page (live pages included) until closed."""
    await client.send(Pull(pull_id=1, cursor=cursor))
    while True:
        try:
            message = await client.receive()
        except trio_websocket.ConnectionClosed:
            return
        if isinstance(message, PullPage):
            yield message


# --- abusive connections -------------------------------------------------------------


class RawConnection:
    """A WebSocket client on a bare TCP stream, so that after the opening handshake it
    reads *nothing* unless asked: trio-websocket's reader task would keep reading (and
    buffering) behind our back, which is exactly what an abusive client does not do."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self._ws = ws

    async def send(self, message: Message) -> None:
        await self.stream.send_all(self._ws.send(TextMessage(data=encode(message))))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_raw_connection(url: str, receive_buffer: int | None = None) -> RawConnection:
    """Connects and completes the opening handshake (reading only its answer).

    ``receive_buffer`` sets SO_RCVBUF before connecting (it sizes the TCP window): what
    a client that never reads can hold before the server's sends block.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=f"{host}:{port}", target=parts.path or "/")))
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise ConnectionError(f"{url} closed during the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return RawConnection(stream, ws)
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"{url} refused the handshake")
    except BaseException:
        await stream.aclose()
        raise


async def open_idle(url: str) -> RawConnection:
    """Connected, said hello, then does nothing (its welcome is never read)."""
    conn = await open_raw_connection(url)
    await conn.send(hello(unique_id("idle")))
    return conn


#: A small receive window for the never-reading pullers: their sends block sooner, and a
#: thousand of them do not pin gigabytes of kernel memory on a shared machine.
NEVER_READER_BUFFER = 16 * 1024


async def open_never_reading_puller(url: str) -> RawConnection:
    """Hello, then a pull of the whole log, then never reads a byte: the server's sends
    to it fill the socket buffers and block."""
    conn = await open_raw_connection(url, receive_buffer=NEVER_READER_BUFFER)
    await conn.send(hello(unique_id("stuck")))
    await conn.send(Pull(pull_id=1, cursor=0))
    return conn
