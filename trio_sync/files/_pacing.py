"""When a file transfer yields to the event sync, as pure code (the time is passed in).

A transfer and the event sync share the disk, the cores and the event loop. An event's
cost is a few milliseconds of durable commits (the sender's, the server's, the
receiver's); a transfer's is seconds of chunk reads, writes, syncs and hashing. Whenever
they overlap, the event waits behind the chunks. So while the client's event sync has
work in flight (``ClientCore.sync_busy``: a commit or a merge being written, own events
pushed and not acknowledged yet), a transfer holds its next chunk (before reading and
sending it, or before writing and syncing it) until the event sync is idle again.

Two limits keep the transfers moving:

- one hold lasts at most ``max_hold`` seconds (an event slower than that is not made
  faster by waiting for it);
- over time, a transfer keeps at least ``share`` of the time whatever the event sync does:
  holding spends a credit that only time spent transferring earns back (at
  ``(1 - share) / share`` seconds of credit per second), so a client that commits without
  pause slows its transfers to ``share`` of their speed, not to a halt.

When no event flows, nothing is ever held: the transfers run at full speed.
"""

from __future__ import annotations

import attrs

from .._checks import finite_non_negative, finite_positive


@attrs.frozen
class PacingPolicy:
    """How file transfers yield to the event sync (see the module's description).

    Attributes:
        max_hold: The longest a transfer holds one chunk, in seconds.
        share: The least share of the time (0 < share <= 1) a transfer keeps while events
            flow without pause; 1 never holds.
    """

    max_hold: float = attrs.field(default=0.05, validator=finite_non_negative)
    share: float = attrs.field(default=0.5, validator=finite_positive)

    def __attrs_post_init__(self) -> None:
        if not self.share <= 1:
            raise ValueError(f"share must be above 0 and at most 1, got {self.share!r}")

    @property
    def earn_rate(self) -> float:
        """Seconds of hold earned per second spent transferring."""
        return (1 - self.share) / self.share


#: A hold shorter than this is not worth a wait (a timer and a wake-up cost more).
MIN_HOLD = 0.0005


class TransferPacer:
    """The pacing of one transfer: call :meth:`before_chunk` before each chunk and, when
    it says to hold, :meth:`resumed` once the hold ends."""

    def __init__(self, policy: PacingPolicy, now: float) -> None:
        self.policy = policy
        #: Seconds of hold left to spend (at most ``max_hold``).
        self.credit = policy.max_hold if policy.share < 1 else 0.0
        self._since = now
        self._holding = False
        #: Seconds held so far (for the tests and the trace).
        self.held = 0.0

    def before_chunk(self, now: float, *, busy: bool) -> float | None:
        """None: go on with the next chunk now. Otherwise the time to hold until; the
        caller goes on earlier as soon as the event sync is idle, then calls
        :meth:`resumed`."""
        self._earn(now)
        if not busy or self.credit < MIN_HOLD:
            return None
        self._holding = True
        return now + self.credit

    def resumed(self, now: float) -> None:
        """The hold that :meth:`before_chunk` asked for ended (idle, or its deadline)."""
        if not self._holding:
            return
        spent = max(0.0, now - self._since)
        self.credit = max(0.0, self.credit - spent)
        self.held += spent
        self._holding = False
        self._since = now

    def _earn(self, now: float) -> None:
        if self._holding:  # before_chunk without resumed: count the hold as spent
            self.resumed(now)
            return
        elapsed = max(0.0, now - self._since)
        self.credit = min(self.policy.max_hold, self.credit + elapsed * self.policy.earn_rate)
        self._since = now
