"""A token bucket: how long to wait before the next message may be handled. Pure: the
caller passes the time in."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` operations per second on average, and bursts of ``burst``.

    Raises:
        ValueError: ``rate`` or ``burst`` not positive.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def charge(self, tokens: float) -> None:
        """Takes ``tokens`` more for what was just done (the next take waits longer)."""
        self._tokens -= tokens

    def take(self, now: float) -> float:
        """Takes one token; returns how many seconds to wait before using it (0: at once).

        A caller that waits that long and takes again stays at ``rate`` on average.
        """
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
