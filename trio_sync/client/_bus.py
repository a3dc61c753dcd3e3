"""The client's event bus: ephemeral notifications about what the engine is doing.

Durable facts live in the event log; the bus only says what happened a moment ago
(``sync.start``, ``push.ack``, ``heartbeat.recovery``...), for progress bars, logs and
debugging. Publishing never waits: each subscriber has a bounded buffer, and a subscriber
that falls behind loses the oldest notifications (counted in its ``dropped``) instead of
slowing sync down.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs
import trio

from .._runs import check_run, current_run

#: How many notifications a subscriber may have unread before the oldest are dropped.
DEFAULT_SUBSCRIBER_BUFFER = 256
#: How many of the last notifications ``recent_events()`` can show.
RECENT_EVENTS = 1000


def _read_only(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Notification:
    """One notification.

    Attributes:
        kind: What happened, e.g. ``"push.ack"`` or ``"heartbeat.recovery"``.
        at: The Trio clock's time (virtual under MockClock, so replays agree).
        fields: The details, e.g. ``{"reason": "stalled-pull"}``.
    """

    kind: str
    at: float
    fields: Mapping[str, object] = attrs.field(factory=dict, converter=_read_only)

    def __getitem__(self, key: str) -> object:
        return self.fields[key]


class EventBus:
    """Fans notifications out to subscribers and keeps the last few for debugging."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = trio.current_time,
        recent: int = RECENT_EVENTS,
    ) -> None:
        self._clock = clock
        self._recent: deque[Notification] = deque(maxlen=recent)
        # Weak: a subscriber that stops iterating and is dropped unsubscribes itself.
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self.published = 0
        self._ended = False

    def publish(self, kind: str, **fields: object) -> Notification:
        """Records a notification and hands it to every subscriber, never waiting."""
        notification = Notification(kind, self._clock(), fields)
        self.published += 1
        self._recent.append(notification)
        for subscription in list(self._subscribers):
            subscription._deliver(notification)
        return notification

    def subscribe(self, *, buffer: int = DEFAULT_SUBSCRIBER_BUFFER) -> Subscription:
        """A new subscription, receiving every notification published from now on.

        Raises:
            ValueError: ``buffer`` is below 1.
        """
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1, got {buffer}")
        subscription = Subscription(buffer)
        if self._ended:
            subscription._end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def end(self) -> None:
        """No more notifications (the client closed): every subscription ends once what
        it holds is read, and later ones are empty."""
        self._ended = True
        for subscription in list(self._subscribers):
            subscription._end()

    def recent(self, n: int | None = None) -> list[Notification]:
        """The last ``n`` notifications (all kept ones if None), oldest first."""
        kept = list(self._recent)
        return kept if n is None else kept[max(0, len(kept) - n) :]


class Subscription:
    """An async iterator over notifications; breaking out of ``async for`` needs no
    clean-up (it can also be closed explicitly, or used as a context manager)."""

    def __init__(self, buffer: int) -> None:
        self._buffer: deque[Notification] = deque()
        self._limit = buffer
        self._arrived = trio.Event()
        self._closed = False
        #: The run it belongs to: the client's (its waits are woken from there).
        self._run = current_run()
        #: The client closed: nothing more will arrive.
        self._ended = False
        #: Notifications this subscriber missed because it fell behind.
        self.dropped = 0

    def _deliver(self, notification: Notification) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._limit:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(notification)
        self._arrived.set()

    def pending(self) -> int:
        """How many notifications wait to be read."""
        return len(self._buffer)

    def get_nowait(self) -> Notification | None:
        """The next waiting notification, or None."""
        return self._buffer.popleft() if self._buffer else None

    def close(self) -> None:
        self._closed = True
        self._buffer.clear()
        self._arrived.set()

    def _end(self) -> None:
        # Unlike close(): what arrived before the end is still read.
        self._ended = True
        self._arrived.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Notification:
        check_run(self._run)
        while not self._buffer:
            if self._closed or self._ended:
                raise StopAsyncIteration
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self._buffer.popleft()
