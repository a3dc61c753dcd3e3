"""The transfer executor's decisions, as pure code (no event loop, no clock, no random).

:class:`TransferQueue` decides which transfer runs next in one direction (bounded
concurrency, downloads the application waits for first, no duplicates, jittered
exponential backoff, a transfer held while its contents move in another);
:class:`StuckQueueWatch` decides when a heartbeat tick means the
queue is stuck; :class:`ProgressThrottle` decides which progress notifications are worth
sending; :func:`stale_on_open` decides what a crashed run left behind. The runtime
(``_executor.py``) only waits, moves bytes and calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from .._checks import finite_positive, none_or_positive_int
from ..protocol import backoff_delay

#: What a transfer can be, locally (never synced).
TRANSFER_STATUSES = ("pending", "queued", "in_progress", "done", "error")


@attrs.frozen
class RetryPolicy:
    """Jittered exponential backoff between attempts of one transfer.

    Attributes:
        base: The first delay, in seconds.
        cap: The largest delay.
        max_attempts: Attempts before the transfer is given up (status "error"); None
            retries for ever.
        missing_base: The first delay after the server said it does not hold the blob
            yet, doubling up to ``cap`` like the others. Shorter than ``base``: that is
            no failure, and most often the upload is under way (a client hears of a new
            file as soon as its event is out, usually before its contents are), so the
            file shows up a moment after its upload ends, not a second later.
    """

    base: float = attrs.field(default=1.0, validator=finite_positive)
    cap: float = attrs.field(default=60.0, validator=finite_positive)
    max_attempts: int | None = attrs.field(default=10, validator=none_or_positive_int)
    missing_base: float = attrs.field(default=0.1, validator=finite_positive)

    def __attrs_post_init__(self) -> None:
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap!r}) must be at least base ({self.base!r})")

    def delay(self, failures: int, jitter: float, *, missing: bool = False) -> float:
        base = self.missing_base if missing else self.base
        return backoff_delay(failures, base=base, cap=self.cap, jitter=jitter)


@attrs.define
class _Item:
    key: str
    priority: bool
    failures: int = 0
    #: Failures that count against ``max_attempts`` (``failures`` sets the backoff).
    counted: int = 0
    #: The last attempt failed in a way that does not count (a download: the server does
    #: not hold the contents yet; an upload: its sound bytes refused, see
    #: ``last_failure_uncounted``).
    uncounted_last: bool = False
    ready_at: float = 0.0
    order: int = 0


class TransferQueue:
    """The transfers of one direction: queued, waiting for a retry, or in flight.

    A key is queued at most once (adding it again only raises its priority); at most
    ``concurrency`` are in flight. Priority items go first, then first come, first served.
    """

    def __init__(self, concurrency: int, retry: RetryPolicy) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.retry = retry
        self._waiting: dict[str, _Item] = {}
        self._in_flight: dict[str, _Item] = {}
        #: Keys a worker has started and not yet released: in flight, or in flight no
        #: more (its outcome decided) while the worker still writes it down. Such a key,
        #: queued again meanwhile, waits: one transfer never runs twice at once.
        self._busy: set[str] = set()
        #: Keys asked for again while in flight (since their last discard), with the
        #: priority asked: queued afresh once their transfer ends (:meth:`asked_again`).
        self._again: dict[str, bool] = {}
        #: Keys in flight discarded since they started (their transfer is being stopped).
        self._dropped: set[str] = set()
        self._counter = 0

    def add(self, key: str, *, priority: bool = False, ready_at: float = 0.0) -> bool:
        """Queues ``key`` (True) unless it is already queued or in flight (False: a
        priority request still raises the queued one's priority; one in flight is noted,
        to be queued afresh when it ends: see :meth:`asked_again`)."""
        if key in self._in_flight:
            # The transfer in flight may be for what was wanted before (its file has new
            # contents, say): this request gets a transfer of its own, with no failures
            # or backoff of that one, and its own priority.
            self._again[key] = self._again.get(key, False) or priority
            return False
        item = self._waiting.get(key)
        if item is not None:
            if priority and not item.priority:
                item.priority = True
                item.ready_at = 0.0  # the application waits: no backoff left
            return False
        self._counter += 1
        self._waiting[key] = _Item(key, priority, ready_at=ready_at, order=self._counter)
        return True

    def discard(self, key: str) -> None:
        """Forgets a queued ``key`` (its file was deleted, or its transfer is stopped for
        other contents), and any request for it made while it was in flight; one in
        flight is left to its worker, which is told separately."""
        self._waiting.pop(key, None)
        self._again.pop(key, None)
        if key in self._in_flight:
            self._dropped.add(key)

    def next_ready(self, now: float, *, held: Callable[[str], bool] | None = None) -> str | None:
        """The key to start now, or None (nothing ready, or concurrency reached).

        ``held(key)``: True for a key that must not start yet although it is ready (its
        contents are moving in another transfer right now); it stays queued. A key whose
        worker has not released it yet waits too.
        """
        if len(self._in_flight) >= self.concurrency:
            return None
        best: tuple[bool, int] | None = None
        chosen = None
        for item in self._waiting.values():
            if item.ready_at > now or item.key in self._busy:
                continue
            rank = (not item.priority, item.order)
            if best is not None and rank >= best:
                continue  # asked of held() only when it would win: picks stay cheap
            if held is not None and held(item.key):
                continue
            best, chosen = rank, item.key
        return chosen

    def start(self, key: str) -> None:
        """``key`` (from :meth:`next_ready`) is now in flight, and busy until
        :meth:`released`."""
        self._in_flight[key] = self._waiting.pop(key)
        self._busy.add(key)
        self._dropped.discard(key)

    def succeeded(self, key: str) -> None:
        self._in_flight.pop(key, None)

    def failed(
        self, key: str, now: float, jitter: float, *, retryable: bool = True, counts: bool = True
    ) -> float | None:
        """The attempt failed: queues a retry after the backoff and returns when, or
        returns None when the retry policy gives up or the failure is not ``retryable``
        (the key is then dropped). A failure that does not ``count`` (the blob is not on
        the server yet) backs off but never exhausts the attempts."""
        item = self._in_flight.pop(key, None)
        # Asked for while this attempt ran, with no discard since (the same contents):
        # answered by this attempt's verdict, as a request made a moment later would be.
        asked = self._again.pop(key, None)
        if item is None or not retryable:
            return None
        if asked:
            item.priority = True
        item.failures += 1
        item.counted += counts
        item.uncounted_last = not counts
        limit = self.retry.max_attempts
        if counts and limit is not None and item.counted >= limit:
            return None
        # A priority item keeps its place but still backs off: the server said no.
        item.ready_at = now + self.retry.delay(item.failures, jitter, missing=not counts)
        self._waiting[key] = item
        return item.ready_at

    def last_failure_uncounted(self, key: str) -> bool:
        """Whether ``key``'s previous attempt failed without counting. An upload refused
        for bytes that were not its own counts when its previous attempt was refused
        that way too: a race or a stray partial does not repeat in a row, a server that
        refuses every upload does, and is given up on like any other failure."""
        item = self._in_flight.get(key) or self._waiting.get(key)
        return item is not None and item.uncounted_last

    def released(self, key: str) -> None:
        """The worker is done with ``key``: it may start again. Still in flight, it was
        interrupted (the worker died or was stopped mid-transfer): queued again at once."""
        self._busy.discard(key)
        item = self._in_flight.pop(key, None)
        asked = self._again.pop(key, None)
        dropped = key in self._dropped
        self._dropped.discard(key)
        if item is None or dropped:
            # Ended (its worker died before taking a request made meanwhile), or stopped
            # (discarded) while in flight: queued again only on a request made since, as
            # a new transfer.
            if asked is not None:
                self.add(key, priority=asked)
            return
        item.ready_at = 0.0
        item.priority = item.priority or bool(asked)
        self._waiting[key] = item

    def asked_again(self, key: str) -> bool | None:
        """Whether ``key`` was asked for while in flight, since it was last discarded:
        None if not, else the priority asked (the record is taken). Its worker, done with
        it, queues it again then, with that priority: the request made meanwhile gets a
        transfer of its own. A transfer stopped with nobody asking again (its file was
        deleted) is not queued again, whatever its rows say."""
        return self._again.pop(key, None)

    def next_deadline(self, *, held: Callable[[str], bool] | None = None) -> float | None:
        """When the earliest waiting retry becomes ready (None if none waits); keys
        ``held`` (see :meth:`next_ready`) wait for a change, not for a time."""
        times = [
            item.ready_at
            for item in self._waiting.values()
            if item.key not in self._busy and (held is None or not held(item.key))
        ]
        return min(times) if times else None

    def ready_count(self, now: float) -> int:
        return sum(
            1
            for item in self._waiting.values()
            if item.ready_at <= now and item.key not in self._busy
        )

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def waiting_uncounted(self) -> list[str]:
        """Keys waiting after an attempt that failed without counting (downloads: for
        contents the server does not hold yet)."""
        return [key for key, item in self._waiting.items() if item.uncounted_last]

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def busy(self) -> int:
        """Keys started and not yet released (those in flight among them)."""
        return len(self._busy)

    def keys(self) -> list[str]:
        return [*self._in_flight, *self._waiting]

    def describe(self, now: float) -> dict[str, object]:
        """What the queue holds, for a person finding out why transfers do not move: each
        waiting key with its priority, failures so far and seconds until it may start (0:
        ready), the keys in flight, and those still held by their worker."""
        return {
            "waiting": [
                {
                    "key": item.key,
                    "priority": item.priority,
                    "failures": item.failures,
                    "ready_in": round(max(0.0, item.ready_at - now), 3),
                }
                for item in self._waiting.values()
            ],
            "in_flight": list(self._in_flight),
            "busy": sorted(self._busy),
        }

    def __contains__(self, key: str) -> bool:
        return key in self._waiting or key in self._in_flight


class StuckQueueWatch:
    """Says when the queue is stuck: items ready to go, nothing in flight, online and not
    paused, for ``ticks`` consecutive heartbeat ticks (workers that died leave exactly
    that)."""

    def __init__(self, ticks: int = 2) -> None:
        self._ticks = ticks
        self._seen = 0

    def tick(self, *, ready: int, in_flight: int, online: bool, paused: bool) -> bool:
        """One heartbeat tick; True when the queue must be healed now (then it counts
        again from zero)."""
        if ready and not in_flight and online and not paused:
            self._seen += 1
        else:
            self._seen = 0
        if self._seen >= self._ticks:
            self._seen = 0
            return True
        return False


class ProgressThrottle:
    """At most one progress notification per ``interval`` seconds per transfer (the
    last one, at 100%, always goes)."""

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._last: float | None = None

    def should_send(self, now: float, done: int, total: int) -> bool:
        if done >= total or self._last is None or now - self._last >= self._interval:
            self._last = now
            return True
        return False


def stale_on_open(statuses: Iterable[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The transfers to reset to "queued" when a client opens: those a crashed run left
    "in_progress" or "error". Takes ``(file_id, direction, status)``; returns
    ``(file_id, direction)``. Run once per client lifecycle, never on a reconnect: a live
    transfer is "in_progress" too."""
    return [
        (file_id, direction)
        for file_id, direction, status in statuses
        if status in ("in_progress", "error")
    ]


def keeps_connection(*, cancelled: bool, failed: bool, refused_at_begin: bool) -> bool:
    """Whether a worker's kept blob connection can carry its next transfer after this
    one: yes after a success, and after a refusal in answer to the transfer's first
    message (that conversation ended cleanly); no after a cancel or any other failure,
    since where the conversation stopped is unknown."""
    return not cancelled and (not failed or refused_at_begin)


def idle_connection_closes_at(idle_since: float, keep: float, *, online: bool) -> float:
    """When a worker's kept blob connection, idle since ``idle_since``, closes: ``keep``
    seconds later (the next save may come a moment after), at once when offline."""
    return idle_since + keep if online else idle_since


def runs_again_on_new_connection(*, reused: bool, connection_lost: bool) -> bool:
    """Whether a failed attempt runs again at once on a new connection, not counted: it
    failed because the kept connection it reused had closed meanwhile (the server's idle
    timeout, a proxy, a restart), which says nothing of this transfer. A new connection
    failing is a real failure (so this happens at most once per transfer)."""
    return reused and connection_lost
