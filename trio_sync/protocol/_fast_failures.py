"""Failing fast: connection attempts that keep failing soon after the server answered.

Sans-IO (the caller passes the times in). Failing again and again within seconds of
reaching the server is no offline period: waiting will not help (a proxy's 404, a bad
token, a crashing server), so the status says "stuck". Not reaching anything at all is an
offline period, and ends a run of fast failures.
"""

from __future__ import annotations

#: An attempt that ends this soon after the server answered failed fast.
FAST_FAILURE_SECONDS = 2.0
#: This many fast failures in a row make the state "stuck".
FAST_FAILURES_STUCK = 3


class FastFailures:
    """Counts attempts in a row that failed fast."""

    def __init__(
        self, window: float = FAST_FAILURE_SECONDS, stuck_after: int = FAST_FAILURES_STUCK
    ) -> None:
        self.window = window
        self.stuck_after = stuck_after
        self.count = 0

    @property
    def stuck(self) -> bool:
        return self.count >= self.stuck_after

    def on_failure(self, now: float, *, up_since: float | None, answered: bool) -> None:
        """An attempt ended.

        Args:
            now: When it ended.
            up_since: When it got a connection (the handshake's time if it got that far);
                None: it reached nothing.
            answered: Something at the address answered and refused (an HTTP reply).
        """
        fast = answered if up_since is None else now - up_since < self.window
        self.count = self.count + 1 if fast else 0

    def on_stable(self) -> None:
        """A connection stayed up ``window`` seconds (or the cause is gone): the run ends."""
        self.count = 0
