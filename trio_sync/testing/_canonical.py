"""The canonical reproductions of LiveStore's advance-only push stall, as pinned scenarios.

``lost-ack``: one client commits 5 events and pushes them 2 at a time. The server accepts
the first push, but its ack is lost; the echo of the two events comes back in the pull.
Under ``park`` the push loop gives up waiting for the ack and parks; the pull saw only an
*advance* (our own events), which never unparks it: events 3 to 5 are never pushed.
Under ``supervised`` the echo counts as the ack and pushing goes on (and since full
pushes are pipelined, push 2 is already on its way: its ack answers for push 1 too).

``lost-ack-and-echo``: the same, but the echo is lost too, so nothing at all comes back
for push 1. ``park`` parks for ever; under ``supervised`` push 2's ack answers for both,
and the gap in the pull stream makes the client pull again.
"""

from __future__ import annotations

from typing import Any

_QUIET = {
    "clients": 1,
    "events": (5,),
    "commit_batch": 5,
    "push_batch_size": 2,
    "latency": 0.001,
    "jitter": 0.0,
    "pause": 0.0,
    "ack_loss": 0.0,
    "ack_delay": 0.0,
    "page_loss": 0.0,
    "disconnects": 0,
    "server_restarts": 0,
    "client_crashes": 0,
    "deadline": 60.0,
}

#: Named scenarios: every parameter pinned, so the seed changes nothing that matters.
CANONICAL: dict[str, dict[str, Any]] = {
    "lost-ack": {**_QUIET, "lose_acks": (1,)},
    "lost-ack-and-echo": {**_QUIET, "lose_acks": (1,), "lose_pages": (1,)},
}


def canonical_params(name: str) -> dict[str, Any]:
    """The pinned parameters of a canonical scenario (for ``run_scenario(seed, **them)``).

    Raises:
        ValueError: Unknown scenario name.
    """
    try:
        return dict(CANONICAL[name])
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; expected one of {sorted(CANONICAL)}"
        ) from None
