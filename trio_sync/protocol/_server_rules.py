"""The server's decision on a pushed batch, as a pure function of facts the store supplies.

A batch (all from one client, client_seq contiguous) splits into the events the server
already holds (a retry after a lost ack) and the new ones. The held ones are acknowledged
with their seqs whatever the parent; the new ones are appended if the parent is the head,
or if everything between the parent and the head is the client's own (an earlier ack was
lost). Otherwise the answer is ``server_ahead``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._events import Event
from ._messages import Push


@attrs.frozen
class PushFacts:
    """What the server's log says about a push, gathered in the same transaction.

    Attributes:
        head: The server's head.
        last_client_seq: The highest client_seq held for the pushing client (0: none).
        foreign_after_parent: Whether any event after the push's parent is another
            client's.
        held: The events of the batch the server already holds, by client_seq.
    """

    head: int
    last_client_seq: int
    foreign_after_parent: bool
    held: Mapping[int, Event]


@attrs.frozen
class Accept:
    """Append ``new`` (seqs from head + 1) and acknowledge the whole batch with ``seqs``."""

    new: tuple[Event, ...]
    seqs: tuple[int, ...]


@attrs.frozen
class Ahead:
    """Refuse for now: the client must catch up to ``head`` first."""

    head: int


@attrs.frozen
class Reject:
    """Refuse for good: the batch can never be appended as it is.

    Attributes:
        reason: What is wrong, in words.
        code: The same in one word, for metrics: "foreign_event", "not_held", "differs",
            "client_seq_gap" or "parent_beyond_head".
    """

    reason: str
    code: str


PushDecision = Accept | Ahead | Reject


def decide_push(push: Push, client_id: str, facts: PushFacts) -> PushDecision:
    """Decides what the server does with ``push`` from ``client_id``."""
    for event in push.events:
        if event.client_id != client_id:
            return Reject(
                f"event {event.key} belongs to another client than {client_id!r}",
                "foreign_event",
            )
    held_part = [e for e in push.events if e.client_seq <= facts.last_client_seq]
    new_part = [e for e in push.events if e.client_seq > facts.last_client_seq]
    seqs: list[int] = []
    for event in held_part:
        held = facts.held.get(event.client_seq)
        if held is None or held.seq is None:
            return Reject(
                f"event {event.key} is below the last held client_seq but not held", "not_held"
            )
        if not held.same_fact(event):
            return Reject(f"event {event.key} differs from the one the server holds", "differs")
        seqs.append(held.seq)
    if not new_part:
        return Accept(new=(), seqs=tuple(seqs))

    expected = facts.last_client_seq + 1
    if new_part[0].client_seq != expected:
        return Reject(
            f"client_seq gap: the server holds up to {facts.last_client_seq}, "
            f"the batch continues at {new_part[0].client_seq}",
            "client_seq_gap",
        )
    if push.parent > facts.head:
        return Reject(
            f"parent {push.parent} is beyond the server head {facts.head}", "parent_beyond_head"
        )
    if push.parent != facts.head and facts.foreign_after_parent:
        return Ahead(facts.head)
    new = tuple(e.at(facts.head + i + 1) for i, e in enumerate(new_part))
    return Accept(new=new, seqs=(*seqs, *(e.seq for e in new if e.seq is not None)))
