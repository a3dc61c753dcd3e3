"""An in-memory transport: message objects over Trio memory channels, for the simulator.

No encoding happens here: the simulator exercises the same client and server code as
production, and the codec is tested on its own. Latency and faults are the simulator's
business; it wraps these connections.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._errors import ConnectError, ConnectionClosed
from ..protocol import Message
from ._base import ConnectionHandler


class MemoryConnection:
    """One end of an in-memory connection."""

    def __init__(
        self,
        send_channel: trio.MemorySendChannel[Message],
        receive_channel: trio.MemoryReceiveChannel[Message],
    ) -> None:
        self._send = send_channel
        self._receive = receive_channel
        self.close_reason = ""

    async def send(self, message: Message) -> None:
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection closed by the peer") from None

    async def receive(self) -> Message:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosed("connection closed") from None

    async def aclose(self, reason: str = "") -> None:
        self.close_reason = reason
        await self._send.aclose()
        await self._receive.aclose()


def memory_connection_pair() -> tuple[MemoryConnection, MemoryConnection]:
    """Two connected ends (client, server)."""
    to_server, from_client = trio.open_memory_channel[Message](math.inf)
    to_client, from_server = trio.open_memory_channel[Message](math.inf)
    return MemoryConnection(to_server, from_server), MemoryConnection(to_client, from_client)


class MemoryNetwork:
    """Named in-memory listeners that clients connect to by URL (``memory://name``)."""

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[trio.Nursery, ConnectionHandler]] = {}

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        name: str,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accepts connections to ``memory://name`` until cancelled."""
        url = f"memory://{name}"
        async with trio.open_nursery() as nursery:
            self._listeners[url] = (nursery, handler)
            try:
                task_status.started(url)
                await trio.sleep_forever()
            finally:
                del self._listeners[url]

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[MemoryConnection]:
        """Connects to a listener.

        Raises:
            ConnectError: Nothing listens at ``url``.
        """
        listener = self._listeners.get(url)
        if listener is None:
            raise ConnectError(f"nothing listens at {url}")
        nursery, handler = listener
        client_end, server_end = memory_connection_pair()
        nursery.start_soon(handler, server_end)
        try:
            yield client_end
        finally:
            await client_end.aclose()
