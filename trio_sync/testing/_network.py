"""The simulated network: the in-memory transport with a scenario's latency and losses.

Each direction of a connection delivers in order after a latency drawn from the
simulation's seeded random source; a push ack can be held up for seconds (``ack_delay``).
The server's messages can be lost on purpose (the n-th
push ack or pull page) or by chance (``ack_loss``, ``page_loss``); ``cut`` breaks a
client's connections, losing what is in flight.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from ..protocol import Message, PullPage, PushAck
from ..transport import MemoryNetwork
from ._params import ScenarioParams

Record = Callable[[str, str, Mapping[str, object]], None]


class SimNetwork(MemoryNetwork):
    """A :class:`MemoryNetwork` whose latency and losses follow a scenario."""

    def __init__(self, params: ScenarioParams, rng: random.Random, record: Record) -> None:
        super().__init__(delay=self._delay, loses=self._loses)
        self._params = params
        self._rng = rng
        self._record = record
        self.acks_sent = 0
        self.pages_sent = 0

    def _delay(self, message: Message) -> float:
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
            lost = self.acks_sent in params.lose_acks or (
                params.ack_loss > 0 and self._rng.random() < params.ack_loss
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
