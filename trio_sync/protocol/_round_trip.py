"""Noticing a loss in about one round trip: an estimate of the round trip, and a watch on
the pull stream.

A lost push ack (and its echo), or the last page of a stream, leaves nothing to react to:
no later message shows a gap. Waiting for a fixed timeout or for the heartbeat's ticks
costs seconds where a round trip costs milliseconds. So the client measures round trips
(each push's answer), and treats as lost what has not come within a timeout derived from
them (RFC 6298: smoothed time plus four times its variation), bounded below by a floor
and above by the fixed timeout. A fault-free run sends nothing more: every answer comes
within its round trip.
"""

from __future__ import annotations

import attrs


class RoundTrip:
    """The smoothed round-trip time and its variation, from samples the caller measures."""

    def __init__(self) -> None:
        self.smoothed: float | None = None
        self.variation = 0.0

    def sample(self, seconds: float) -> None:
        """One measured round trip (a push and its answer; the handshake)."""
        seconds = max(0.0, seconds)
        if self.smoothed is None:
            self.smoothed = seconds
            self.variation = seconds / 2
        else:
            self.variation = 0.75 * self.variation + 0.25 * abs(self.smoothed - seconds)
            self.smoothed = 0.875 * self.smoothed + 0.125 * seconds

    def timeout(self, *, floor: float, cap: float) -> float:
        """How long an answer may take before it counts as lost (``cap`` until measured)."""
        if self.smoothed is None:
            return cap
        return min(cap, max(floor, self.smoothed + 4 * self.variation))


@attrs.frozen
class StreamStalled:
    """The pull stream stopped delivering what the server is known to hold: restart it."""

    reason: str


class StreamWatch:
    """Watches the pull stream: when the server is known to hold events past ours (its
    head came in an ack, a pong, a page or a ``server_ahead``) and no page has made
    progress for a round-trip timeout, the stream lost a page or stalled. Each restart
    that brings nothing doubles the wait, so a dead stream is not restarted in a loop
    (the heartbeat replaces a dead connection)."""

    def __init__(self) -> None:
        self._waiting_since: float | None = None
        self._head = -1
        self._fruitless = 0

    def observe(self, now: float, *, upstream_head: int, server_head: int) -> None:
        """What the client knows now (call after every change)."""
        progressed = upstream_head != self._head
        self._head = upstream_head
        if progressed:
            self._fruitless = 0
        if server_head <= upstream_head:
            self._waiting_since = None
        elif progressed or self._waiting_since is None:
            self._waiting_since = now

    def deadline(self, timeout: float) -> float | None:
        """When the stream counts as stalled if nothing changes (None: not waiting)."""
        if self._waiting_since is None:
            return None
        backoff: float = 2.0 ** min(self._fruitless, 6)
        return self._waiting_since + timeout * backoff

    def check(self, now: float, timeout: float) -> StreamStalled | None:
        """At or after the deadline: the stream stalled (and the wait starts again)."""
        deadline = self.deadline(timeout)
        if deadline is None or now < deadline:
            return None
        waited = now - (self._waiting_since or now)
        self._fruitless += 1
        self._waiting_since = now
        return StreamStalled(f"no page for {waited:.3g}s while the server holds more")
