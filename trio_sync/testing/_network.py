"""The simulated network: in-memory connections with latency, jitter, loss and cuts.

Each direction of a connection delivers messages in order (like TCP) after a latency drawn
from the simulation's seeded random source. Messages from the server can be lost on
purpose (the n-th push ack or pull page) or by chance (``ack_loss``, ``page_loss``); a
connection can be cut at any moment, losing what is in flight.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import trio

from .._errors import ConnectError, ConnectionClosed
from ..protocol import Message, PullPage, PushAck
from ..transport import ConnectionHandler
from ._params import ScenarioParams

Record = Callable[[str, str, Mapping[str, object]], None]
_Item = tuple[float, Message]


class _End:
    """One end of a simulated connection (the Connection interface).

    A message travels as ``(delivery time, message)``; the receiver sleeps until the
    delivery time itself, so a message costs no task of its own. Delivery times only grow
    along one direction, so order is kept, like TCP.
    """

    def __init__(
        self,
        link: _Link,
        outgoing: trio.MemorySendChannel[_Item],
        incoming: trio.MemoryReceiveChannel[_Item],
        from_server: bool,
    ) -> None:
        self._link = link
        self._outgoing = outgoing
        self._incoming = incoming
        self._from_server = from_server
        self._last_delivery = 0.0

    async def send(self, message: Message) -> None:
        # A cancellation point, not a yield: the message is on its way at once.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._link.broken:
            raise ConnectionClosed("connection cut")
        if self._from_server and self._link.network.loses(self._link.client_id, message):
            return
        now = trio.current_time()
        delivery = max(self._last_delivery, now + self._link.network.delay())
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

    async def aclose(self, reason: str = "") -> None:
        self._outgoing.close()
        self._incoming.close()
        await trio.lowlevel.checkpoint()


class _Link:
    """Both directions of one connection."""

    def __init__(self, network: SimNetwork, client_id: str) -> None:
        self.network = network
        self.client_id = client_id
        self.broken = False
        to_server, server_inbox = trio.open_memory_channel[_Item](math.inf)
        to_client, client_inbox = trio.open_memory_channel[_Item](math.inf)
        self.client_end = _End(self, to_server, client_inbox, from_server=False)
        self.server_end = _End(self, to_client, server_inbox, from_server=True)
        self._channels = (to_server, to_client, server_inbox, client_inbox)

    def cut(self) -> None:
        """Breaks the connection now: whatever is in flight is lost, both ends see it."""
        self.broken = True
        for channel in self._channels:
            channel.close()


class SimNetwork:
    """A network of one server address and any number of clients, all in memory."""

    def __init__(self, params: ScenarioParams, rng: random.Random, record: Record) -> None:
        self._params = params
        self._rng = rng
        self._record = record
        self._listener: tuple[trio.Nursery, ConnectionHandler] | None = None
        # Lists, not sets: iteration order must not depend on object addresses.
        self._links: dict[str, list[_Link]] = defaultdict(list)
        self.acks_sent = 0
        self.pages_sent = 0

    def delay(self) -> float:
        """The one-way latency of the next message."""
        jitter = self._params.jitter
        return self._params.latency + (self._rng.uniform(0.0, jitter) if jitter else 0.0)

    def loses(self, client_id: str, message: Message) -> bool:
        """Whether the server's ``message`` to ``client_id`` is lost (recorded if so)."""
        params = self._params
        if isinstance(message, PushAck):
            self.acks_sent += 1
            lost = self.acks_sent in params.lose_acks or (
                params.ack_loss > 0 and self._rng.random() < params.ack_loss
            )
            if lost:
                self._record(
                    "net",
                    "lost.push_ack",
                    {"to": client_id, "push_id": message.push_id, "seqs": list(message.seqs)},
                )
            return lost
        if isinstance(message, PullPage) and message.events:
            self.pages_sent += 1
            lost = self.pages_sent in params.lose_pages or (
                params.page_loss > 0 and self._rng.random() < params.page_loss
            )
            if lost:
                first, last = message.events[0].seq, message.events[-1].seq
                self._record("net", "lost.pull_page", {"to": client_id, "seqs": f"{first}-{last}"})
            return lost
        return False

    async def serve(
        self,
        handler: ConnectionHandler,
        *,
        name: str,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accepts connections to ``sim://name`` until cancelled (a server "process")."""
        async with trio.open_nursery() as nursery:
            self._listener = (nursery, handler)
            try:
                task_status.started(f"sim://{name}")
                await trio.sleep_forever()
            finally:
                self._listener = None

    @asynccontextmanager
    async def connect(self, url: str, *, client_id: str) -> AsyncIterator[_End]:
        """Connects ``client_id`` to the server.

        Raises:
            ConnectError: The server is down.
        """
        await trio.lowlevel.checkpoint()
        if self._listener is None:
            raise ConnectError(f"nothing listens at {url}")
        listener_nursery, handler = self._listener
        link = _Link(self, client_id)
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
