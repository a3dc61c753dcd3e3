"""Catch-up progress: how far a client is through the history it is pulling. Sans-IO: the
caller passes the time in."""

from __future__ import annotations

import attrs

#: Below this many seconds of catch-up, a rate would be noise: none is given.
MIN_RATE_WINDOW = 0.5


@attrs.frozen
class CatchUpProgress:
    """Where a catch-up stands: counts, never a percentage of something unknown.

    Attributes:
        done: Events applied since the catch-up began.
        total: Events to apply in it (the server's head when last heard, minus the head
            the catch-up started from); it grows if the server moves on meanwhile.
        bytes: Bytes of history received since it began.
        rate: Events per second so far (None until it has run long enough to tell).
        eta: Seconds left at that rate (None while the rate is unknown).
    """

    done: int
    total: int
    bytes: int
    rate: float | None
    eta: float | None


class CatchUpMeter:
    """Follows one catch-up at a time: it starts when the server is seen ahead of the
    local head and ends when the local head reaches the server's."""

    def __init__(self) -> None:
        self._start_head: int | None = None
        self._started_at = 0.0
        self._bytes = 0

    @property
    def active(self) -> bool:
        return self._start_head is not None

    def observe(
        self, now: float, *, upstream_head: int, server_head: int | None, received: int = 0
    ) -> None:
        """Takes the current heads (and the bytes of history just received)."""
        behind = server_head is not None and server_head > upstream_head
        if not behind:
            self._start_head = None
            self._bytes = 0
            return
        if self._start_head is None:
            self._start_head = upstream_head
            self._started_at = now
        self._bytes += received

    def progress(
        self, now: float, *, upstream_head: int, server_head: int | None
    ) -> CatchUpProgress | None:
        """The progress now (None when not catching up)."""
        start = self._start_head
        if start is None or server_head is None or server_head <= upstream_head:
            return None
        done = max(0, upstream_head - start)
        total = server_head - start
        elapsed = now - self._started_at
        rate = done / elapsed if done and elapsed >= MIN_RATE_WINDOW else None
        eta = (total - done) / rate if rate else None
        return CatchUpProgress(done=done, total=total, bytes=self._bytes, rate=rate, eta=eta)
