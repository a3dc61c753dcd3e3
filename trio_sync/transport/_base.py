"""The one interface both runtimes talk through.

A :class:`Connection` carries whole protocol messages. Implementations translate their own
errors: a closed or broken connection raises :class:`~trio_sync.ConnectionClosed`, a
frame that does not decode raises a :class:`~trio_sync.ProtocolError` subclass; nothing
else escapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..protocol import Message

#: WebSocket close codes the runtimes use.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001


class Connection(Protocol):
    """A message connection between one client and the server.

    Attributes:
        target: What the peer asked for: the request path on the server side ("/" or
            "/<store_id>"); "" on the client side.
        peer: Who is at the other end, for logs (an address, a simulated client's name).
        opened_at: When the connection was accepted (Trio's clock): the handshake's time
            counts from here.
    """

    target: str
    peer: str
    opened_at: float

    def admit(self) -> None:
        """The peer passed the handshake: from now on accept frames up to the full limit
        (before, only what a hello needs)."""

    async def send(self, message: Message) -> None:
        """Sends one message (queued whole: a cancelled send never cuts a frame).

        Raises:
            ConnectionClosed: The connection is closed or broken.
        """

    def queues_at_once(self, kind: type[Message]) -> bool:
        """True when a message of type ``kind`` sent now would be queued without waiting
        (its queue has room), so the sender needs no timer around it: a server sends to
        every reader per event, and a timer per send was a good part of that. False when
        it might wait, or when the connection is closed (``send`` then says so)."""
        ...

    async def wait_room_for_page(self) -> bool:
        """Returns once a pull page would be queued at once (a stream waits here before
        it reads its next page): True if it had to wait (the peer is slow to read).

        Raises:
            ConnectionClosed: The connection is closed or broken.
        """

    async def receive(self) -> Message:
        """Receives the next message.

        Raises:
            ConnectionClosed: The connection is closed or broken.
            ProtocolError: The peer sent a frame that is not a valid message.
        """
        ...

    async def aclose(self, reason: str = "", *, code: int = CLOSE_NORMAL) -> None:
        """Sends what is queued (briefly), then closes with ``code`` (idempotent; never
        raises)."""


#: Opens a client connection to ``url``; raises ConnectError if that fails.
Connector = Callable[[str], AbstractAsyncContextManager[Connection]]

#: Handles one accepted server-side connection until it ends.
ConnectionHandler = Callable[[Connection], Awaitable[None]]
