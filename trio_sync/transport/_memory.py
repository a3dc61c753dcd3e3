"""The in-memory transport: message objects over Trio memory channels.

No encoding happens here (the codec is tested on its own), so the simulator exercises the
same client and server code as production at memory speed. A network can delay messages
(``delay``), lose the server's messages (``loses``) and cut a client's connections
(``cut``); the simulator sets those from a scenario's seed, tests can leave them out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from .._errors import ConnectError, ConnectionClosed
from ..protocol import Message
from ._base import CLOSE_NORMAL, ConnectionHandler

_Item = tuple[float, Message]


def _no_delay(message: Message) -> float:
    return 0.0


def _loses_nothing(client_id: str, message: Message) -> bool:
    return False


class MemoryConnection:
    """One end of an in-memory connection (the Connection interface).

    A message travels as ``(delivery time, message)``; the receiver sleeps until the
    delivery time itself, so a message in flight costs no task. Delivery times only grow
    along one direction, so order is kept, like TCP.
    """

    def __init__(
        self,
        link: _Link,
        outgoing: trio.MemorySendChannel[_Item],
        incoming: trio.MemoryReceiveChannel[_Item],
        from_server: bool,
        target: str = "",
    ) -> None:
        self.target = target
        self.peer = link.client_id if from_server else "server"
        self.opened_at = trio.current_time()
        self._link = link
        self._outgoing = outgoing
        self._incoming = incoming
        self._from_server = from_server
        self._last_delivery = 0.0

    def admit(self) -> None:
        """Nothing to do: messages in memory are objects, not frames."""

    def queues_at_once(self, kind: type[Message]) -> bool:
        """A send in memory never waits (while the link is whole)."""
        return not self._link.broken

    async def wait_room_for_page(self) -> bool:
        """Always room: a send in memory never waits."""
        if self._link.broken:
            raise ConnectionClosed("connection cut")
        return False

    async def send(self, message: Message) -> None:
        # A cancellation point, not a yield: the message is on its way at once.
        await trio.lowlevel.checkpoint_if_cancelled()
        link = self._link
        if link.broken:
            raise ConnectionClosed("connection cut")
        if self._from_server and link.network.loses(link.client_id, message):
            return
        delivery = max(self._last_delivery, trio.current_time() + link.network.delay(message))
        self._last_delivery = delivery
        try:
            self._outgoing.send_nowait((delivery, message))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection closed") from None

    async def receive(self) -> Message:
        try:
            delivery, message = await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosed("connection closed") from None
        if delivery > trio.current_time():
            await trio.sleep_until(delivery)
        if self._link.broken:  # cut while the message was in flight: it is lost
            raise ConnectionClosed("connection cut")
        return message

    async def aclose(self, reason: str = "", *, code: int = CLOSE_NORMAL) -> None:
        self._outgoing.close()
        self._incoming.close()
        await trio.lowlevel.checkpoint()


class _Link:
    """Both directions of one connection."""

    def __init__(self, network: MemoryNetwork, client_id: str, target: str) -> None:
        self.network = network
        self.client_id = client_id
        self.broken = False
        to_server, server_inbox = trio.open_memory_channel[_Item](math.inf)
        to_client, client_inbox = trio.open_memory_channel[_Item](math.inf)
        self.client_end = MemoryConnection(self, to_server, client_inbox, from_server=False)
        self.server_end = MemoryConnection(
            self, to_client, server_inbox, from_server=True, target=target
        )
        self._channels = (to_server, to_client, server_inbox, client_inbox)

    def cut(self) -> None:
        """Breaks the connection now: whatever is in flight is lost, both ends see it."""
        self.broken = True
        for channel in self._channels:
            channel.close()


class MemoryNetwork:
    """Named in-memory listeners that clients connect to by URL (``memory://name``).

    Args:
        delay: Returns the one-way latency of a message, in seconds.
        loses: Decides whether the server's message to a client is lost on the way.
    """

    def __init__(
        self,
        *,
        delay: Callable[[Message], float] = _no_delay,
        loses: Callable[[str, Message], bool] = _loses_nothing,
    ) -> None:
        self.delay = delay
        self.loses = loses
        self._listeners: dict[str, tuple[trio.Nursery, ConnectionHandler]] = {}
        # Lists, not sets: iteration order must not depend on object addresses.
        self._links: dict[str, list[_Link]] = defaultdict(list)

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
    async def connect(self, url: str, *, client_id: str = "") -> AsyncIterator[MemoryConnection]:
        """Connects to a listener (``client_id`` names the connection for ``cut``/``loses``).

        ``memory://name/store`` reaches the store ``store`` of the listener ``name``.

        Raises:
            ConnectError: Nothing listens at ``url``.
        """
        await trio.lowlevel.checkpoint()
        parts = urlsplit(url)
        listener = self._listeners.get(f"{parts.scheme}://{parts.netloc}")
        if listener is None:
            raise ConnectError(f"nothing listens at {url}")
        listener_nursery, handler = listener
        link = _Link(self, client_id, parts.path or "/")
        self._links[client_id].append(link)
        listener_nursery.start_soon(handler, link.server_end)
        try:
            yield link.client_end
        finally:
            self._links[client_id].remove(link)
            link.cut()

    def cut(self, client_id: str) -> int:
        """Cuts every connection of ``client_id``; returns how many."""
        links = list(self._links[client_id])
        for link in links:
            link.cut()
        return len(links)
