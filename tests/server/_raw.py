"""What the server tests share: a raw WebSocket to send anything on, plain HTTP requests,
and a check that the server's log can be read back whole."""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import trio
import trio_websocket
import wsproto
import wsproto.events

from trio_sync.protocol import PROTOCOL_VERSION, Error, Hello, Message, check_value, decode, encode
from trio_sync.transport import connect_websocket

from ..conftest import WAIT


@asynccontextmanager
async def raw_websocket(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket to send anything on: the library connection under trio_sync's
    connector (which closes the socket even when the server closes first; trio-websocket's
    own client does not). Sending on it directly bypasses our encoder's checks."""
    async with connect_websocket(url) as conn:
        yield conn._ws


def hello(client_id: str = "raw", *, token: str | None = None, cursor: int = 0) -> Hello:
    return Hello(PROTOCOL_VERSION, client_id, "default", 1, None, cursor, token=token)


async def receive(ws: trio_websocket.WebSocketConnection) -> Message:
    with trio.fail_after(WAIT):
        return decode(await ws.get_message())


async def say_hello(ws: trio_websocket.WebSocketConnection, client_id: str = "raw") -> Message:
    await ws.send_message(encode(hello(client_id)))
    return await receive(ws)


async def refusal(ws: trio_websocket.WebSocketConnection) -> Error:
    """The server's last word: an error, then the connection closes."""
    reply = await receive(ws)
    assert isinstance(reply, Error), reply
    with trio.fail_after(WAIT):
        try:
            extra = await ws.get_message()
        except trio_websocket.ConnectionClosed:
            return reply
    raise AssertionError(f"the connection stayed open after the error: {extra!r}")


async def http_get(url: str, path: str) -> tuple[int, bytes]:
    """A plain HTTP/1.1 GET on the server's port; returns the status and body."""
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def wait_for_metric(url: str, line: bytes) -> None:
    """Polls /metrics until it shows ``line``: some server state is observable only there."""
    with trio.fail_after(WAIT):
        while line not in (await http_get(url, "/metrics"))[1]:  # noqa: ASYNC110
            await trio.sleep(0.05)


def assert_log_reads_back(db_path: str | Path) -> int:
    """The database passes SQLite's integrity check and every stored event reads back as
    one that every peer can store: returns how many events it holds."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = 0
        last: dict[str, int] = {}
        for store, seq, name, args in conn.execute(
            "SELECT store_id, seq, name, args FROM log ORDER BY store_id, seq"
        ):
            assert seq == last.get(store, 0) + 1, f"gap in store {store!r} at seq {seq}"
            last[store] = seq
            name.encode("utf-8")
            check_value(orjson.loads(args), path="args", max_depth=64)
            count += 1
        return count
    finally:
        conn.close()


class RawFrames:
    """A WebSocket client that writes frames byte by byte (so it can send what no library
    would: invalid UTF-8 in a text frame, say). The handshake and the server's frames go
    through wsproto."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    async def handshake(self, host: str, path: str) -> None:
        await self._stream.send_all(self._ws.send(wsproto.events.Request(host=host, target=path)))
        while True:
            for event in self._ws.events():
                if isinstance(event, wsproto.events.AcceptConnection):
                    return
                raise AssertionError(f"handshake refused: {event}")
            self._ws.receive_data(await self._stream.receive_some())

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        """One final frame, masked as a client must mask it."""
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes([0x80 | opcode, 0x80 | length])
        elif length < 2**16:
            head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", length)
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self._stream.send_all(head + mask + masked)

    async def close_code(self) -> int | None:
        """Reads until the server closes; returns its close code (None: TCP closed)."""
        with trio.fail_after(WAIT):
            while True:
                for event in self._ws.events():
                    if isinstance(event, wsproto.events.CloseConnection):
                        return event.code
                data = await self._stream.receive_some()
                if not data:
                    return None
                self._ws.receive_data(data)


@asynccontextmanager
async def raw_frames(url: str) -> AsyncIterator[RawFrames]:
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        client = RawFrames(stream)
        await client.handshake(f"{host}:{port}", "/")
        yield client
