"""Jittered, capped exponential backoff, as a pure function (the caller draws the jitter)."""

from __future__ import annotations


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    "Full jitter": a uniform draw between half the exponential step and the whole step,
    so that clients that failed together do not retry together, yet never retry at once.

    Args:
        attempt: How many consecutive failures so far (>= 1).
        base: The first step.
        cap: The largest step.
        jitter: A number in [0, 1) drawn by the caller.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    step: float = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return step * (0.5 + jitter / 2)
