"""The push supervisor: when to push, what, and what to do with each answer.

Two policies share one interface so the runtime never branches on a flag:

* :class:`SupervisedPush` (the default) never parks. A failed push is retried after a
  jittered backoff; after ``server_ahead`` it waits for the pull to bring what the server
  holds (the stream watch restarts a stream that stalled); every upstream advance or
  rebase restarts pushing from the new head at once. A push unanswered for a round-trip
  timeout (measured, see ``_round_trip.py``) counts as failed.
* :class:`ParkingPush` reproduces LiveStore's legacy leader: after any push error it parks,
  and only an upstream *rebase* unparks it. An advance-only sequence (our own events echoed
  back after a lost ack) leaves it parked for ever. It exists for the stall reproduction
  and the benchmark, never as a default.

The runtime drives a machine like this::

    action = machine.poll(state, now)
    SendPush -> send it;  Sleep(deadline) -> wait until woken or deadline;
    at the deadline -> machine.on_deadline(now, jitter)

and tells it about replies (``on_ack``, ``on_server_ahead``, ``on_rejected``, each with the
time it came: answers measure the round trip), about upstream changes
(``on_upstream_change``) and about the connection (``on_connected``).
"""

from __future__ import annotations

from typing import Literal

import attrs

from ._backoff import backoff_delay
from ._messages import Push
from ._round_trip import RoundTrip
from ._state import SyncState

Phase = Literal["ready", "in_flight", "backoff", "catching_up", "parked"]


@attrs.frozen
class SendPush:
    """Send this push now."""

    push: Push


@attrs.frozen
class Sleep:
    """Nothing to send: wait until ``deadline`` (None: until something happens)."""

    deadline: float | None


PushAction = SendPush | Sleep

#: How many recent pushes' send times are kept for round-trip samples.
_REMEMBERED_SENDS = 64


@attrs.frozen
class PushTimings:
    """Timing parameters of a push machine, in seconds."""

    #: How long to wait for the answer to a push before calling it failed, at most: once
    #: round trips are measured, the wait is their smoothed time plus four times their
    #: variation, but at least ``min_ack_timeout``.
    ack_timeout: float = 10.0
    min_ack_timeout: float = 0.5
    #: First and largest backoff step after consecutive failures.
    retry_base: float = 0.1
    retry_cap: float = 10.0
    #: How long to wait for a catch-up before pushing again anyway.
    catch_up_timeout: float = 5.0


class PushMachine:
    """Common part of both policies. Subclasses decide what failures and changes do.

    Pushes are pipelined: while pushes wait for their answers, the next one goes out at
    once if it is *full* (``batch_size`` events, or cut short by the server's limits), up to
    ``window`` pushes in flight. A backlog then moves at the speed of the link instead of
    one push per round trip, and a trickle of commits still goes one push at a time (as
    much batching as before, no extra pushes). The server answers a connection's pushes in
    order and accepts a push whose parent is behind its head by the client's own events
    only, so pipelined pushes need nothing new from it. When one push fails or meets
    ``server_ahead``, the pushes sent after it are void: their refusals (a client_seq gap,
    the server ahead) are consequences, not news.
    """

    policy: str = ""
    #: Pushes in flight at most (the legacy policy pushes one at a time).
    window: int = 4

    def __init__(self, batch_size: int, timings: PushTimings | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"push batch_size must be an int of at least 1, not {batch_size!r}")
        self.batch_size = batch_size
        self.timings = timings or PushTimings()
        self.phase: Phase = "ready"
        #: When the current phase ends on its own (ack timeout, end of backoff).
        self.deadline: float | None = None
        #: The pushes awaiting an answer, oldest first.
        self.in_flight: list[Push] = []
        #: Pushes sent after one that failed: their answers tell nothing new.
        self._void: set[int] = set()
        self.failures = 0
        self.last_error: str | None = None
        self.catch_up_target = 0
        self.round_trip = RoundTrip()
        #: When recent pushes were sent, by push_id: a late answer is a round-trip sample too.
        self._sent_at: dict[int, float] = {}
        #: Pushes whose answer was given up on (timed out): their late ack ends a backoff.
        self._given_up: set[int] = set()
        self._waiting = 0.0
        self._next_push_id = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(phase={self.phase!r}, failures={self.failures})"

    # --- what to do now ---------------------------------------------------------------

    def poll(self, state: SyncState, now: float) -> PushAction:
        """The next step for the push loop."""
        if self.phase == "catching_up" and state.upstream_head >= self.catch_up_target:
            self._become_ready()
        if self.phase == "in_flight":
            if len(self.in_flight) >= self.window:
                return Sleep(self.deadline)
            plan = state.plan_push(
                self.batch_size, after_client_seq=self.in_flight[-1].events[-1].client_seq
            )
            if plan is None or not plan.full:
                return Sleep(self.deadline)  # a partial batch waits: it may still fill
        elif self.phase == "ready":
            plan = state.plan_push(self.batch_size)
            if plan is None:
                return Sleep(None)
        else:
            return Sleep(self.deadline)
        push = Push(push_id=self._next_push_id, parent=plan.parent, events=plan.events)
        self._next_push_id += 1
        self._sent_at[push.push_id] = now
        if len(self._sent_at) > _REMEMBERED_SENDS:
            del self._sent_at[next(iter(self._sent_at))]
        if not self.in_flight:
            # The deadline is the oldest push's: answers come in order.
            self._waiting = self.answer_timeout()
            self.deadline = now + self._waiting
        self.in_flight.append(push)
        self.phase = "in_flight"
        return SendPush(push)

    def answer_timeout(self) -> float:
        """How long an answer may take now before it counts as lost."""
        timings = self.timings
        return self.round_trip.timeout(floor=timings.min_ack_timeout, cap=timings.ack_timeout)

    def on_deadline(self, now: float, jitter: float) -> None:
        """The current phase's deadline passed (call only when ``now >= deadline``)."""
        if self.deadline is None or now < self.deadline:
            return
        if self.phase == "in_flight":
            error = f"no answer to push {self.in_flight_id} within {self._waiting:.3g}s"
            self._given_up.update(push.push_id for push in self.in_flight)
            self._void_in_flight()
            self._failed(error, now, jitter)
        elif self.phase in ("backoff", "catching_up"):
            self._become_ready()

    @property
    def in_flight_id(self) -> int | None:
        """The oldest push in flight, if any."""
        return self.in_flight[0].push_id if self.in_flight else None

    def is_stuck(self, state: SyncState) -> bool:
        """True when events wait for the server with nothing pushing or scheduled to push
        them (the heartbeat's "stuck queue")."""
        return self.phase == "parked" and state.unacknowledged_count > 0

    # --- answers ----------------------------------------------------------------------

    def on_ack(self, push_id: int, now: float) -> None:
        """The server acknowledged push ``push_id`` (the caller updates the SyncState).

        A late ack of a push given up on is news too: the connection works (it was only
        slow), so the failures are forgiven and a backoff ends at once.
        """
        self._answered(push_id, now)
        index = self._in_flight_index(push_id)
        if index is not None:
            # Answers come in order: the pushes before it were answered (or their answers
            # lost, and this one holds their events too).
            del self.in_flight[: index + 1]
            self.failures = 0
            self.last_error = None
            if self.in_flight:
                self._rearm(now)
            else:
                self._become_ready()
        elif push_id in self._given_up and self.phase == "backoff":
            self.failures = 0
            self.last_error = None
            self._become_ready()

    def on_server_ahead(
        self, push_id: int, server_head: int, state: SyncState, now: float, jitter: float
    ) -> None:
        """The server holds other clients' events after our parent."""
        self._answered(push_id, now)
        if self._in_flight_index(push_id) is not None:
            self._void_in_flight()
            self._server_ahead(server_head, state, now, jitter)

    def on_rejected(self, push_id: int, reason: str, now: float, jitter: float) -> bool:
        """The server refused the batch outright. Returns False when the refusal is only a
        consequence of an earlier push's failure (a void push): not news."""
        self._answered(push_id, now)
        if push_id in self._void:
            return False
        if self._in_flight_index(push_id) is not None:
            self._void_in_flight()
            self._failed(f"push rejected: {reason}", now, jitter)
        return True

    def _in_flight_index(self, push_id: int) -> int | None:
        for index, push in enumerate(self.in_flight):
            if push.push_id == push_id:
                return index
        return None

    def _void_in_flight(self) -> None:
        self._void.update(push.push_id for push in self.in_flight)
        if len(self._void) > _REMEMBERED_SENDS:
            self._void = set(sorted(self._void)[-_REMEMBERED_SENDS:])
        self.in_flight = []

    def _answered(self, push_id: int, now: float) -> None:
        # Each push has its own id, so an answer is never mistaken for a retry's: a late
        # answer measures how slow the path is now, which is what the timeout must learn.
        sent_at = self._sent_at.pop(push_id, None)
        if sent_at is not None:
            self.round_trip.sample(now - sent_at)

    def on_connected(self) -> None:
        """A new connection is up: whatever was in flight is gone; start afresh."""
        self._sent_at.clear()
        self._given_up.clear()
        self._void.clear()
        self.failures = 0
        self._become_ready()

    def on_upstream_change(self, kind: str, state: SyncState) -> None:
        """The pull applied new upstream events (``kind`` is "advance" or "rebase")."""
        raise NotImplementedError

    def on_kick(self) -> None:
        """The heartbeat saw events waiting with nothing pushing them."""
        raise NotImplementedError

    # --- helpers ----------------------------------------------------------------------

    def _drop_confirmed(self, state: SyncState) -> None:
        """Pushes in flight whose events all came back in the pull are done (the echo
        proves them durable, whatever becomes of their ack)."""
        first_pending = state.pending_first_client_seq
        while self.in_flight and (
            first_pending is None or self.in_flight[0].events[-1].client_seq < first_pending
        ):
            del self.in_flight[0]

    def _rearm(self, now: float | None) -> None:
        """The oldest push in flight changed: its own answer timeout runs from its send."""
        sent_at = self._sent_at.get(self.in_flight[0].push_id, now)
        if sent_at is None:
            return  # not remembered, and no time given: keep the deadline there is
        self._waiting = self.answer_timeout()
        self.deadline = sent_at + self._waiting

    def _become_ready(self) -> None:
        self.phase = "ready"
        self.deadline = None
        self.in_flight = []

    def _failed(self, error: str, now: float, jitter: float) -> None:
        raise NotImplementedError

    def _server_ahead(self, server_head: int, state: SyncState, now: float, jitter: float) -> None:
        raise NotImplementedError


class SupervisedPush(PushMachine):
    """The default policy: never parks; retries, catches up, restarts on any change."""

    policy = "supervised"

    def on_upstream_change(self, kind: str, state: SyncState) -> None:
        # The restart that fixes LiveStore's stall: any change (advance or rebase) ends a
        # backoff or a catch-up wait at once. A push in flight whose events came back in
        # the pull is done (the echo proves them durable, whatever became of the ack);
        # one still unconfirmed keeps waiting for its answer, bounded by ack_timeout.
        if self.phase != "in_flight":
            self._become_ready()
            return
        oldest = self.in_flight_id
        self._drop_confirmed(state)
        if not self.in_flight:
            self._become_ready()
        elif self.in_flight_id != oldest:
            self._rearm(None)

    def on_kick(self) -> None:
        if self.phase != "in_flight":
            self._become_ready()

    def _failed(self, error: str, now: float, jitter: float) -> None:
        self.failures += 1
        self.last_error = error
        self.in_flight = []
        self.phase = "backoff"
        self.deadline = now + backoff_delay(
            self.failures,
            base=self.timings.retry_base,
            cap=self.timings.retry_cap,
            jitter=jitter,
        )

    def _server_ahead(self, server_head: int, state: SyncState, now: float, jitter: float) -> None:
        self.in_flight = []
        if state.upstream_head >= server_head:
            # The pull already brought what the server meant: push again from the new head.
            self._become_ready()
            return
        # The live pull is bringing it (the stream watch restarts it if a page was lost):
        # push again once it is here, or after catch_up_timeout anyway.
        self.phase = "catching_up"
        self.catch_up_target = server_head
        self.deadline = now + self.timings.catch_up_timeout


class ParkingPush(PushMachine):
    """LiveStore's legacy policy: park after any push error, unpark only on a rebase."""

    policy = "park"
    window = 1

    def on_upstream_change(self, kind: str, state: SyncState) -> None:
        # The bug, reproduced on purpose: an advance does not restart a parked push loop.
        if kind == "rebase" and self.phase != "in_flight":
            self._become_ready()

    def on_kick(self) -> None:
        # The legacy leader had no heartbeat to rescue it.
        pass

    def _failed(self, error: str, now: float, jitter: float) -> None:
        self.failures += 1
        self.last_error = error
        self.in_flight = []
        self.phase = "parked"
        self.deadline = None

    def _server_ahead(self, server_head: int, state: SyncState, now: float, jitter: float) -> None:
        self._failed(f"server ahead at {server_head}", now, jitter)


PUSH_POLICIES: dict[str, type[PushMachine]] = {
    SupervisedPush.policy: SupervisedPush,
    ParkingPush.policy: ParkingPush,
}


def make_push_machine(
    policy: str, batch_size: int, timings: PushTimings | None = None
) -> PushMachine:
    """Returns the push machine for ``policy`` ("supervised" or "park").

    Raises:
        ValueError: Unknown policy.
    """
    try:
        cls = PUSH_POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown push_policy {policy!r}; expected one of {sorted(PUSH_POLICIES)}"
        ) from None
    return cls(batch_size, timings)
