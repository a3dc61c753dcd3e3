"""The simulated network: the in-memory transport with a world's latency and losses.

Each direction of a connection delivers in order after a latency drawn from the
simulation's seeded random source; a push ack can be held up for seconds (``ack_delay``).
The server's messages can be lost on purpose (the n-th push ack or pull page, or the next
ack to one client) or by chance (``ack_loss``, ``page_loss``); ``cut`` breaks a client's
connections, losing what is in flight; ``partition`` keeps clients away from the server
until ``heal``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from .._errors import ConnectError
from ..protocol import Message, PullPage, PushAck
from ..transport import MemoryConnection, MemoryNetwork

Record = Callable[[str, str, Mapping[str, object]], None]


class NetworkParams(Protocol):
    """What the network reads from a world's parameters (SimParams, ScenarioParams)."""

    @property
    def latency(self) -> float: ...
    @property
    def jitter(self) -> float: ...
    @property
    def ack_loss(self) -> float: ...
    @property
    def ack_delay(self) -> float: ...
    @property
    def page_loss(self) -> float: ...
    @property
    def lose_acks(self) -> tuple[int, ...]: ...
    @property
    def lose_pages(self) -> tuple[int, ...]: ...


class SimNetwork(MemoryNetwork):
    """A :class:`MemoryNetwork` whose latency and losses follow a world's parameters."""

    def __init__(self, params: NetworkParams, rng: random.Random, record: Record) -> None:
        super().__init__(delay=self._delay, loses=self._loses)
        self._params = params
        self._rng = rng
        self._record = record
        self.acks_sent = 0
        self.pages_sent = 0
        #: Every message sent, both ways (lost ones included): the protocol's traffic.
        self.messages_sent = 0
        #: Clients that cannot reach the server (a list: iteration order is insertion).
        self.partitioned: list[str] = []
        #: Per client, how many of the next push acks sent to it are lost.
        self._acks_to_lose: Counter[str] = Counter()

    # --- faults the simulator or the workload asks for -------------------------------

    def partition(self, client_ids: Iterable[str]) -> int:
        """Keeps ``client_ids`` away from the server until :meth:`heal`; cuts their
        connections now. Returns how many connections were cut."""
        cut = 0
        for client_id in client_ids:
            if client_id not in self.partitioned:
                self.partitioned.append(client_id)
            cut += self.cut(client_id)
        return cut

    def heal(self) -> list[str]:
        """Ends every partition; returns the clients that were kept away."""
        healed, self.partitioned = self.partitioned, []
        return healed

    def lose_next_ack(self, client_id: str) -> None:
        """The next push ack the server sends to ``client_id`` is lost (cumulative)."""
        self._acks_to_lose[client_id] += 1

    @asynccontextmanager
    async def connect(self, url: str, *, client_id: str = "") -> AsyncIterator[MemoryConnection]:
        """Connects like :meth:`MemoryNetwork.connect`, unless ``client_id`` is partitioned.

        Raises:
            ConnectError: Nothing listens at ``url``, or the client is partitioned.
        """
        if client_id in self.partitioned:
            await trio.lowlevel.checkpoint()
            raise ConnectError(f"{url} is unreachable from {client_id} (partitioned)")
        async with super().connect(url, client_id=client_id) as conn:
            yield conn

    # --- what every message goes through ----------------------------------------------

    def _delay(self, message: Message) -> float:
        self.messages_sent += 1
        params = self._params
        delay = params.latency + (self._rng.uniform(0.0, params.jitter) if params.jitter else 0.0)
        if (
            isinstance(message, PushAck)
            and params.ack_delay
            and (self._rng.random() < params.ack_delay)
        ):
            # Held up past the client's ack timeout: the ack arrives after the retry (and,
            # the connection being ordered, so does everything sent after it).
            extra = self._rng.uniform(0.5, 4.0)
            self._record(
                "net", "delayed.push_ack", {"push_id": message.push_id, "by": round(extra, 6)}
            )
            delay += extra
        return delay

    def _loses(self, client_id: str, message: Message) -> bool:
        params = self._params
        if isinstance(message, PushAck):
            self.acks_sent += 1
            asked = self._acks_to_lose[client_id] > 0
            if asked:
                self._acks_to_lose[client_id] -= 1
            lost = (
                asked
                or self.acks_sent in params.lose_acks
                or (params.ack_loss > 0 and self._rng.random() < params.ack_loss)
            )
            if lost:
                details = {"to": client_id, "push_id": message.push_id, "seqs": list(message.seqs)}
                self._record("net", "lost.push_ack", details)
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
