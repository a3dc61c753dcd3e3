"""Noticing a connection that went silent, in about two round-trip timeouts.

A connection can freeze without closing: one message held up on an ordered stream holds
up everything behind it (a stalled TCP stream, a proxy that stopped forwarding). The
heartbeat notices it after ``pong_timeout`` (10 s by default), and every push made in the
meantime times out and backs off, on a connection that cannot answer.

This watch notices it sooner, and costs nothing while the connection works. When a push
has gone unanswered for a round-trip timeout *and nothing at all has arrived* in that
time, it asks for a probe: one ping. If nothing arrives for another timeout after the
probe, the connection is silent, and the client replaces it. Anything that arrives before
the probe (a page, or bytes of a large frame still on its way) starts the wait again;
anything after it shows the connection alive, and the watch rests until the next push (a
lost ack is the push machine's to retry): a server that is only slow to commit still
answers pings, so it is not taken for dead, and a push is probed for once at most.

Sans-IO: the caller passes the times in, and says what happened: when pushes are sent and
answered, and, when it looks, when it last heard anything from the server.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SendProbe:
    """Send one ping now: the connection has been silent while a push waits."""


@attrs.frozen
class Silent:
    """Nothing arrived after the probe either: replace the connection."""

    reason: str


SilenceAction = SendProbe | Silent


class SilenceWatch:
    """One connection's silence watch. A new connection gets a new one."""

    def __init__(self) -> None:
        #: When the oldest unanswered push was sent (None: every push is answered).
        self.waiting_since: float | None = None
        self._probe_sent_at: float | None = None
        #: When something last arrived, as far as the watch was told.
        self._heard_at: float | None = None

    def on_push_sent(self, now: float) -> bool:
        """A push was sent. True when the watch was idle (the caller wakes its task)."""
        if self.waiting_since is None:
            self.waiting_since = now
            return True
        return False

    def on_push_answered(self) -> None:
        """An answer to a push arrived (ack, server ahead, refusal): nothing waits."""
        self.waiting_since = None
        self._probe_sent_at = None

    def deadline(self, timeout: float) -> float | None:
        """When to look next (None: nothing waits, sleep until a push is sent)."""
        if self.waiting_since is None:
            return None
        return self._quiet_since() + timeout

    def _quiet_since(self) -> float:
        assert self.waiting_since is not None
        return max(
            self.waiting_since,
            self._heard_at if self._heard_at is not None else self.waiting_since,
            self._probe_sent_at if self._probe_sent_at is not None else self.waiting_since,
        )

    def check(self, now: float, *, heard_at: float | None, timeout: float) -> SilenceAction | None:
        """Looks at the connection at ``now``.

        Args:
            now: The time.
            heard_at: When anything last arrived from the server (a message, or bytes of
                one), None if nothing has.
            timeout: The round-trip timeout in force.
        """
        if heard_at is not None and (self._heard_at is None or heard_at > self._heard_at):
            self._heard_at = heard_at
            if self._probe_sent_at is not None and heard_at >= self._probe_sent_at:
                # The probe was answered (or something else came): the connection is
                # alive. The push is the push machine's business now; the watch waits for
                # the next one (one probe per push at most, even if its answer never comes).
                self.on_push_answered()
                return None
        deadline = self.deadline(timeout)
        if deadline is None or now < deadline:
            return None
        if self._probe_sent_at is None:
            self._probe_sent_at = now
            return SendProbe()
        assert self.waiting_since is not None  # deadline() was not None
        quiet_since = max(self.waiting_since, self._heard_at or self.waiting_since)
        return Silent(
            f"nothing received for {now - quiet_since:.3g}s while a push waited for its "
            f"answer, not even a pong"
        )
