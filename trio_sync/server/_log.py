"""One store's log as the connections see it: head, change notification, recent tail.

Pullers read recent events from an in-memory tail and older ones from the database, so a
slow or dead client only ever holds up its own connection: there is no per-client queue
to fill. The tail is bounded in bytes (its share of the server's ``max_tail_bytes``) and
in events (its bytes are an estimate of the memory it holds, not of its text); each event
in it keeps its encoded JSON, so a new event is encoded once however
many clients it is sent to.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Sequence

from .._broadcast import Broadcast
from ..protocol import Event, event_json
from ..store import StoreInfo


def memory_estimate(event: Event) -> int:
    """Roughly what an event kept in the tail costs in memory: its encoded text (its real
    size: a string of emoji takes 4 bytes a character) and its parsed args. Measured at 2
    to 6 times the text for typical events, up to 12 for emoji; this errs on the high side
    for most (see the notes of the hardening work)."""
    return 4 * sys.getsizeof(event_json(event)) + 300


class StoreLog:
    """The live view of one store, shared by every connection to it."""

    def __init__(
        self, info: StoreInfo, *, tail_budget: Callable[[], int], max_tail_events: int
    ) -> None:
        self.store_id = info.store_id
        self.server_id = info.server_id
        self._head = info.head
        self._tail_budget = tail_budget
        self._max_tail_events = max_tail_events
        self._tail: deque[Event] = deque()
        self._tail_bytes = 0
        self._changed = Broadcast()
        #: Connections to this store that said hello.
        self.connections = 0

    @property
    def head(self) -> int:
        """The last durable seq of this store."""
        return self._head

    @property
    def tail_bytes(self) -> int:
        return self._tail_bytes

    def publish(self, events: Sequence[Event]) -> None:
        """New durable events: keep them, move the head, wake the pullers.

        Events at or below the head are skipped (this view was made after they were
        durable). Should the rest not follow the head, the tail starts again from them:
        older reads then go to the database.
        """
        fresh = [event for event in events if (event.seq or 0) > self._head]
        if not fresh:
            return
        if fresh[0].seq != self._head + 1:
            self._drop_tail()
        for event in fresh:
            self._tail.append(event)
            self._tail_bytes += memory_estimate(event)
        self._head = fresh[-1].seq or self._head
        self.trim()
        self._changed.notify()

    def trim(self) -> None:
        """Drops the oldest events past this store's share of the tail budget."""
        budget = self._tail_budget()
        while self._tail and (self._tail_bytes > budget or len(self._tail) > self._max_tail_events):
            self._tail_bytes -= memory_estimate(self._tail.popleft())

    def _drop_tail(self) -> None:
        self._tail.clear()
        self._tail_bytes = 0

    def read_tail(self, after: int, max_events: int, max_bytes: int) -> list[Event] | None:
        """Events after ``after`` from memory, or None when they are older than the tail.

        Returns at least one event when there is one, and stops before ``max_bytes``.
        """
        if not self._tail or after < (self._tail[0].seq or 0) - 1:
            return None
        start = after - ((self._tail[0].seq or 0) - 1)
        events: list[Event] = []
        budget = max_bytes
        for index in range(start, min(len(self._tail), start + max_events)):
            event = self._tail[index]
            budget -= len(event_json(event)) + 1
            if events and budget < 0:
                break
            events.append(event)
        return events

    async def wait_beyond(self, cursor: int) -> None:
        """Returns once the head is past ``cursor``."""
        while True:
            changed = self._changed.event
            if self._head > cursor:
                return
            await changed.wait()

    def poke(self) -> None:
        """Wakes every waiter (to make them look at something else, such as a shutdown)."""
        self._changed.notify()
