"""The client's sync state and the merge of upstream batches (advance or rebase).

``SyncState`` is a sans-IO object in the style of h11's ``Connection``: methods take what
happened and say what it meant, and nothing here does I/O. It holds what a client needs
to decide what to do next; the confirmed log itself lives in the store. Every method
either applies completely or, when it refuses, leaves the state untouched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import ClassVar

import attrs

from .._errors import InvalidMessage, ProtocolError
from ._codec import event_json
from ._events import Draft, Event, check_event_content, new_draft, new_event
from ._json import nested_too_deep, utf8_length
from ._limits import DEFAULT_LIMITS, WireLimits


@attrs.frozen
class PushPlan:
    """The next batch to push: ``events`` to be appended after global position ``parent``."""

    parent: int
    events: tuple[Event, ...]
    #: Whether the batch is full: as many events as asked for, or cut short by the
    #: server's limits with more waiting behind it.
    full: bool = False


@attrs.frozen
class Advance:
    """The upstream batch only confirmed our own pending events, or we had none pending.

    Attributes:
        applied: Every event of the batch that was new to us, in server order.
        confirmed_own: Our own events among them (no longer pending).
    """

    applied: tuple[Event, ...]
    confirmed_own: tuple[Event, ...]

    kind: ClassVar[str] = "advance"


@attrs.frozen
class Rebase:
    """Other clients' events arrived while we still hold pending events.

    The still-pending events now sit after the new head: their next push names the new
    head as parent, and an application showing confirmed + pending sees them move.

    Attributes:
        applied: Every event of the batch that was new to us, in server order.
        confirmed_own: Our own events among them (no longer pending).
        rebased: The events still pending, now after the new head.
    """

    applied: tuple[Event, ...]
    confirmed_own: tuple[Event, ...]
    rebased: tuple[Event, ...]

    kind: ClassVar[str] = "rebase"


@attrs.frozen
class Refused:
    """The batch cannot be merged (a gap, or our own events out of order); nothing changed."""

    reason: str

    kind: ClassVar[str] = "refused"


MergeResult = Advance | Rebase | Refused


class SyncState:
    """What one client knows about its place in the global log.

    Attributes:
        client_id: This client.
        upstream_head: The last global seq applied locally. Never moves backwards.
        acked_through: The highest own client_seq the server acknowledged as durable.
        next_client_seq: The client_seq the next commit gets.
        limits: What the server accepts (its welcome says; the defaults before that):
            commits and pushes stay within them.
    """

    def __init__(
        self,
        client_id: str,
        *,
        upstream_head: int = 0,
        pending: Iterable[Event] = (),
        acked_through: int = 0,
        next_client_seq: int = 1,
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        self.client_id = client_id
        self.limits = limits
        self.upstream_head = upstream_head
        self._pending: deque[Event] = deque(pending)
        self.acked_through = acked_through
        self.next_client_seq = next_client_seq
        #: Every pending event up to this client_seq was found within ``_checked_limits``
        #: (pending events never change): a push planned walks each event's depth once,
        #: not once per push planned.
        self._checked_through = 0
        self._checked_limits = limits
        self.check_invariants()

    def __repr__(self) -> str:
        return (
            f"SyncState(client_id={self.client_id!r}, upstream_head={self.upstream_head}, "
            f"pending={len(self._pending)}, acked_through={self.acked_through}, "
            f"next_client_seq={self.next_client_seq})"
        )

    # --- queries ----------------------------------------------------------------------

    @property
    def pending(self) -> tuple[Event, ...]:
        """Own events not yet confirmed by the pull, in commit order."""
        return tuple(self._pending)

    @property
    def pending_count(self) -> int:
        """How many own events are not yet confirmed by the pull."""
        return len(self._pending)

    @property
    def pending_first_client_seq(self) -> int | None:
        """The client_seq of the oldest pending event (None when nothing is pending)."""
        return self._pending[0].client_seq if self._pending else None

    def _first_unacknowledged_index(self) -> int:
        if not self._pending:
            return 0
        return max(0, self.acked_through + 1 - self._pending[0].client_seq)

    @property
    def unacknowledged_count(self) -> int:
        """How many own events the server has not acknowledged (what status shows)."""
        return len(self._pending) - self._first_unacknowledged_index()

    def refusal(self, event: Event) -> str | None:
        """Why the server's limits refuse ``event`` (None: they take it). A commit follows
        the limits the client knew; an event committed before the server's were known
        (offline, first run), or before it lowered them, may break them.
        """
        # Its size is measured again only when its JSON (envelope included) is over the
        # limit; its depth is walked each time (a few containers, once per push planned).
        limits = self.limits
        measure = utf8_length(event_json(event)) > limits.max_event_bytes
        if not measure and not nested_too_deep(event.args, limits.max_depth):
            return None  # as most are: no message to build
        try:
            check_event_content(
                event,
                path=f"pending event {event.client_seq} ({event.name!r})",
                limits=limits,
                measure=measure,
            )
        except InvalidMessage as exc:
            return str(exc)
        return None

    def _within_limits(self, event: Event) -> bool:
        """``refusal(event) is None``, remembered for the pending events checked in a row
        (until the limits change)."""
        if self._checked_limits is not self.limits:
            self._checked_limits = self.limits
            self._checked_through = 0
        # Only pending events can be planned: the run starts at the first of them. (Not
        # at the first unacknowledged one: whoever lowers acked_through would then plan
        # events never checked.)
        through = max(self._checked_through, self._pending[0].client_seq - 1)
        if event.client_seq <= through:
            return True
        if self.refusal(event) is not None:
            return False
        if event.client_seq == through + 1:
            self._checked_through = event.client_seq
        return True

    def refused_head(self) -> tuple[Event, str] | None:
        """The first unacknowledged event and why, when the server's limits refuse it: no
        push can carry it (or, keeping order, any event after it)."""
        index = self._first_unacknowledged_index()
        if index >= len(self._pending):
            return None
        event = self._pending[index]
        why = self.refusal(event)
        return None if why is None else (event, why)

    def refused_first_pending(self) -> tuple[Event, str] | None:
        """:meth:`refused_head`, once it is also the first pending event: every event
        before it is confirmed, so none from it on can be on the server, and it can only
        be set aside (the client is stuck on it)."""
        refused = self.refused_head()
        if refused is None or refused[0].client_seq != self.pending_first_client_seq:
            return None
        return refused

    def plan_push(self, batch_size: int, *, after_client_seq: int = 0) -> PushPlan | None:
        """The next push: up to ``batch_size`` unacknowledged events after our head, within
        the server's limits on events per push and bytes per frame; only events after
        ``after_client_seq`` (those of pushes still in flight come before). It stops before
        an event the server's limits refuse (see :meth:`refused_head`).

        Returns None when there is nothing to push.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        start = self._first_unacknowledged_index()
        if after_client_seq and self._pending:
            start = max(start, after_client_seq + 1 - self._pending[0].client_seq)
        count = min(batch_size, self.limits.max_push_events)
        budget = self.limits.push_bytes_budget()
        events: list[Event] = []
        for event in islice(self._pending, start, start + count):
            size = len(event_json(event)) + 1
            if events and size > budget:
                break
            if not self._within_limits(event):
                break  # the server would refuse the push: what comes before it goes
            budget -= size
            events.append(event)
        if not events:
            return None
        full = len(events) >= batch_size or start + len(events) < len(self._pending)
        return PushPlan(parent=self.upstream_head, events=tuple(events), full=full)

    def check_invariants(self) -> None:
        """Raises AssertionError if the state is inconsistent (tests call it after each step).

        Pending is in contiguous client_seq order, ends at the last commit, holds only our
        own events without a seq, and nothing was acknowledged that was never committed.
        """
        assert self.upstream_head >= 0, "upstream_head is negative"
        assert 0 <= self.acked_through < self.next_client_seq, "acked beyond the last commit"
        expected = self.next_client_seq - len(self._pending)
        assert expected >= 1, "more pending events than commits"
        for event in self._pending:
            assert event.client_seq == expected, (
                f"pending is not contiguous: client_seq {event.client_seq}, expected {expected}"
            )
            assert event.seq is None, f"pending event {event.key} carries seq {event.seq}"
            assert event.client_id == self.client_id, f"pending holds {event.key}"
            expected += 1

    # --- transitions ------------------------------------------------------------------

    def prepare_commit(self, name: str, args: object) -> Event:
        """Builds the next pending event without adding it (write it durably, then add it).

        Raises:
            InvalidEvent: The name or args cannot be stored, or the event is larger than
                the server accepts.
        """
        return new_event(name, args, self.client_id, self.next_client_seq, limits=self.limits)

    def draft(self, name: str, args: object) -> Draft:
        """Checks and normalises a commit, within the server's limits (its client_seq is
        given when it is written).

        Raises:
            InvalidEvent: The name or args cannot be stored, or the event is larger than
                the server accepts.
        """
        return new_draft(name, args, limits=self.limits)

    def add_pending(self, event: Event) -> None:
        """Adds an event made by :meth:`prepare_commit` (once it is durable)."""
        if event.client_seq != self.next_client_seq or event.client_id != self.client_id:
            raise ValueError(f"{event.key} is not the next commit of {self.client_id!r}")
        self._pending.append(event)
        self.next_client_seq += 1

    def commit(self, name: str, args: object) -> Event:
        """Adds a new pending event and returns it (prepare + add, for pure use).

        Raises:
            InvalidEvent: The name or args cannot be stored.
        """
        event = self.prepare_commit(name, args)
        self.add_pending(event)
        return event

    def acknowledged_through(self, first_client_seq: int, count: int) -> int:
        """What acked_through becomes with this ack (nothing changes yet).

        Raises:
            ProtocolError: The ack names events this client never committed.
        """
        last = first_client_seq + count - 1
        if count < 1 or first_client_seq < 1 or last >= self.next_client_seq:
            raise ProtocolError(
                f"ack for client_seq {first_client_seq}..{last}, but this client committed "
                f"only up to {self.next_client_seq - 1}"
            )
        return max(self.acked_through, last)

    def acknowledge(self, first_client_seq: int, count: int) -> None:
        """Records that the server holds ``count`` own events from ``first_client_seq`` on.

        Acks of older pushes arrive late and are harmless: acked_through never goes back.

        Raises:
            ProtocolError: The ack names events this client never committed.
        """
        self.acked_through = self.acknowledged_through(first_client_seq, count)

    def merge(self, batch: Sequence[Event]) -> MergeResult:
        """Evaluates and applies an upstream batch (see :meth:`evaluate_merge`)."""
        result = self.evaluate_merge(batch)
        if not isinstance(result, Refused):
            self.apply_merge(result)
        return result

    def evaluate_merge(self, batch: Sequence[Event]) -> MergeResult:
        """Decides what an upstream batch (consecutive events of the global log) means,
        without changing anything: write the result durably, then :meth:`apply_merge` it.

        Events at or below our head are skipped (a page we already had). The rest must
        start right after our head; our own events in it must be our pending events, in
        order, unchanged.
        """
        new = [e for e in batch if e.seq is None or e.seq > self.upstream_head]
        expected = self.upstream_head + 1
        for event in new:
            if event.seq != expected:
                return Refused(f"gap in upstream: expected seq {expected}, got {event.seq}")
            expected += 1

        confirmed_own: list[Event] = []
        saw_foreign = False
        pending = iter(self._pending)
        # Own events numbered below the first pending one were confirmed in an earlier
        # lineage of this store (before a reset): history, like anyone else's events.
        first_pending = self.next_client_seq - len(self._pending)
        for event in new:
            if event.client_id != self.client_id or event.client_seq < first_pending:
                saw_foreign = True
                continue
            mine = next(pending, None)
            if mine is None:
                return Refused(
                    f"own event client_seq {event.client_seq} at seq {event.seq} is not "
                    "pending here (committed elsewhere, or the store was restored)"
                )
            if event.client_seq != mine.client_seq:
                return Refused(
                    f"own event client_seq {event.client_seq} at seq {event.seq} arrived "
                    f"out of order: expected client_seq {mine.client_seq}"
                )
            if not event.same_fact(mine):
                return Refused(
                    f"own event client_seq {event.client_seq} at seq {event.seq} differs "
                    "from the one committed here"
                )
            confirmed_own.append(event)

        still_pending = tuple(self._pending)[len(confirmed_own) :] if saw_foreign else ()
        if saw_foreign and still_pending:
            return Rebase(tuple(new), tuple(confirmed_own), still_pending)
        return Advance(tuple(new), tuple(confirmed_own))

    def apply_merge(self, result: Advance | Rebase) -> None:
        """Applies a merge :meth:`evaluate_merge` returned for the current state."""
        if not result.applied:
            return
        first = result.applied[0].seq
        if first != self.upstream_head + 1:
            raise ValueError(
                f"merge evaluated at another head: starts at {first}, head is {self.upstream_head}"
            )
        for _ in result.confirmed_own:
            self._pending.popleft()
        self.upstream_head = result.applied[-1].seq  # type: ignore[assignment]
