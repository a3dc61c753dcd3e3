"""Frames waiting for a connection's one writer task.

Only the writer touches the socket, so a task cancelled while sending (a pull replaced by
a newer one, say) can never leave half a frame on the wire: its frame is either queued
whole or not at all. Control frames (acks, pongs, errors) go before bulk frames (pull
pages), so an answer never waits behind a backlog of history. Both queues are bounded:
a peer that stops reading makes senders wait, which is how slowness is noticed.
"""

from __future__ import annotations

from collections import deque

from .._broadcast import Broadcast
from .._errors import ConnectionClosed

#: A WebSocket frame: text (a JSON message) or binary (a blob chunk).
Frame = str | bytes


class Outbox:
    """Two bounded FIFO queues (control first, then bulk) with a closed state."""

    def __init__(self, *, control_capacity: int = 64, bulk_capacity: int = 1) -> None:
        self._control: deque[Frame] = deque()
        self._bulk: deque[Frame] = deque()
        self._control_capacity = control_capacity
        self._bulk_capacity = bulk_capacity
        self._changed = Broadcast()
        self._closed: str | None = None
        #: Frames taken by the writer and not yet reported written.
        self._writing = 0

    @property
    def closed(self) -> str | None:
        """Why the connection closed (None while it is open)."""
        return self._closed

    async def put(self, frame: Frame, *, bulk: bool) -> None:
        """Queues a frame, waiting while its queue is full.

        Raises:
            ConnectionClosed: The connection closed (before or while waiting).
        """
        await self.wait_room(bulk=bulk)
        # No checkpoint since the room was found: the frame takes it.
        (self._bulk if bulk else self._control).append(frame)
        self._changed.notify()

    def has_room(self, *, bulk: bool) -> bool:
        """True when a frame of that kind would be queued at once."""
        if bulk:
            return len(self._bulk) < self._bulk_capacity
        return len(self._control) < self._control_capacity

    async def wait_room(self, *, bulk: bool) -> bool:
        """Returns once a frame of that kind would be queued at once: True if it had to
        wait for that.

        Raises:
            ConnectionClosed: The connection closed.
        """
        waited = False
        while True:
            changed = self._changed.event
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            if self.has_room(bulk=bulk):
                return waited
            waited = True
            await changed.wait()

    async def take(self) -> Frame:
        """The next frame for the writer (control first); waits for one.

        Raises:
            ConnectionClosed: The connection closed.
        """
        while True:
            changed = self._changed.event
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            if self._control or self._bulk:
                self._writing += 1
                frame = self._control.popleft() if self._control else self._bulk.popleft()
                self._changed.notify()
                return frame
            await changed.wait()

    def written(self) -> None:
        """The writer finished writing the frame it took."""
        self._writing -= 1
        self._changed.notify()

    async def wait_empty(self) -> None:
        """Returns once everything queued has been written (or the connection closed)."""
        while True:
            changed = self._changed.event
            if self._closed is not None or not (self._control or self._bulk or self._writing):
                return
            await changed.wait()

    def close(self, reason: str) -> None:
        """Marks the connection closed: waiting and future senders get ConnectionClosed."""
        if self._closed is None:
            self._closed = reason
            self._changed.notify()
