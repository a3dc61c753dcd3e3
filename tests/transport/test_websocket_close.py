"""Closing a WebSocket connection from two tasks: the second waits for the first's
closing handshake instead of returning at once (its owner would then cancel the reader
task, and the first would wait out its timeout for a reply nobody reads)."""

from __future__ import annotations

import base64
import hashlib
from functools import partial

import trio
import trio.testing

from trio_sync.transport import connect_websocket

from ..conftest import WAIT

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _accept_then_say_nothing(stream: trio.SocketStream) -> None:
    """Answers the opening handshake, then reads nothing more (no closing reply)."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await trio.sleep_forever()


async def test_a_second_close_returns_once_the_first_has_ended(nursery: trio.Nursery) -> None:
    # What was tried: the client leaving (its block exits: one close) while its session
    # ends on the closed connection (the connection's owner closes it too, then cancels
    # the reader). The second close returned at once, the reader was cancelled before the
    # server's reply could be read, and every orderly exit took the whole closing timeout.
    # Here the peer never replies: the second close must wait for the first to give up.
    listeners = await nursery.start(
        partial(trio.serve_tcp, _accept_then_say_nothing, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    first_done = trio.Event()
    with trio.fail_after(WAIT):
        async with connect_websocket(f"ws://127.0.0.1:{port}") as conn:

            async def close_first() -> None:
                await conn.aclose("client closed")
                first_done.set()

            async with trio.open_nursery() as closers:
                closers.start_soon(close_first)
                await trio.testing.wait_all_tasks_blocked()  # it waits for the reply
                assert not first_done.is_set()
                await conn.aclose("the owner closes too")
                assert first_done.is_set()
