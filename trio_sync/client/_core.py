"""The client's shared state, owned by the client and updated by its connection sessions."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import trio

from .._broadcast import Broadcast
from .._runs import check_run, current_run
from .._store_runner import StoreRunner
from ..protocol import (
    Advance,
    CatchUpMeter,
    ConnectionPhase,
    Event,
    FastFailures,
    FileTransfers,
    MergeResult,
    PushAck,
    PushMachine,
    Rebase,
    Refused,
    StatusState,
    SyncState,
    SyncStatus,
    Welcome,
    derive_state,
    derive_status,
)
from ..store import ClientStore
from ._bus import EventBus

if TYPE_CHECKING:
    from ._writer import ClientWriter

logger = logging.getLogger("trio_sync.client")

#: Receives ``(what, details)`` for every notable step (the simulator records a trace).
TraceHook = Callable[[str, Mapping[str, object]], None]

#: ``pull.progress`` notifications at most this often (seconds).
PROGRESS_INTERVAL = 0.25


class _Changes(Broadcast):
    """``changed``: each notification first lets the core see whether the state moved."""

    def __init__(self, core: ClientCore) -> None:
        super().__init__()
        self._core = core

    def notify(self) -> None:
        self._core.observe()
        super().notify()


class ClientCore:
    """State shared by the client's tasks; every change notifies ``changed``."""

    def __init__(
        self,
        store: ClientStore,
        state: SyncState,
        push: PushMachine,
        run_store: StoreRunner,
        rng: random.Random,
        trace: TraceHook | None,
    ) -> None:
        self.store = store
        self.state = state
        self.push = push
        self.run_store = run_store
        #: The Trio run this client belongs to (its tasks and waits live there).
        self._trio_token = current_run()
        self.rng = rng
        self._trace = trace
        self._trace_failures = 0
        #: Wall-clock time for the status (``since``, ``last_synced_at``); the simulator
        #: passes a virtual one.
        self.wall_clock: Callable[[], float] = time.time
        self.catch_up = CatchUpMeter()
        self._progress_published_at = -float("inf")
        #: Connection attempts since the last that succeeded.
        self.connect_attempts = 0
        #: Attempts in a row that failed soon after the server answered.
        self.fast_failures = FastFailures()
        #: Why the server refused a push for good (retrying cannot fix it), until an ack.
        self.refused_push: str | None = None
        self.last_synced_at: float | None = store.last_synced_at
        self._state: StatusState | None = None
        #: Why the last handshake found the server incompatible (None: the last one that
        #: finished succeeded, or none did yet); ``Client.reset()`` needs it set.
        self.incompatible: str | None = None
        #: The last handshake found this client's own server with a shorter log (restored
        #: from an older backup): a reset pushes again this client's events it lost.
        self.server_lost_events = False
        #: Counts resets: writes queued for an older lineage are dropped.
        self.lineage = 0
        self._since: float | None = None
        self.changed: Broadcast = _Changes(self)
        #: Notified when the upstream head or the server head known moves (a subset of
        #: ``changed``, for the stream watch).
        self.heads_changed = Broadcast()
        #: Notified when the connection phase changes (a subset of ``changed``).
        self.phase_changed = Broadcast()
        self.phase: ConnectionPhase = "connecting"  # the supervisor starts at once
        self.server_head: int | None = None
        #: The upstream head the store holds (confirmed_events() can see up to here).
        self.durable_head = state.upstream_head
        self.last_error: str | None = None
        self.stuck = False
        #: Counts fresh reports of the server's head (welcome, pong): a report counted
        #: after a moment T tells a head the server had at T or later.
        self.head_reports = 0
        #: Set while someone waits for a fresh head report (wait_synced). An Event, not a
        #: Broadcast: a request made while no session listens stays pending until one does.
        self.head_wanted = trio.Event()
        #: The server identity this client syncs with (None until the first handshake).
        self.known_server_id = store.server_id
        #: The highest client_seq the server said it holds from this id (welcome, or a
        #: reused-id refusal); None until a server said. ``Client.reset()`` continues
        #: after it.
        self.server_held_client_seq: int | None = None
        #: Writes everything to the store (set by open_client, which runs its task).
        self.writer: ClientWriter
        #: Ephemeral notifications for subscribers (``Client.subscribe()``).
        self.bus = EventBus()
        #: Called with the events of each upstream merge once applied (the file view
        #: folds its facts from them instead of reading the log back); with none when
        #: the store was reset.
        self.merge_listeners: list[Callable[[Sequence[Event]], None]] = []
        #: Extra checks the heartbeat runs on each tick while connected (file transfers
        #: add theirs); each heals what it finds and announces it on the bus.
        self.tick_checks: list[Callable[[], Awaitable[None]]] = []
        #: File transfers left (set by the files executor), for the status.
        self.file_transfers = FileTransfers()
        #: Commits and merges handed to the writer and not written yet (see ``sync_busy``).
        self.writes_in_flight = 0

    @property
    def sync_busy(self) -> bool:
        """True while the event sync has work in flight: a commit or a merged page being
        written, or own events pushed (or about to be) and not acknowledged yet. File
        transfers yield to it (``files/_pacing.py``). Cheap: read before every chunk.

        Events waiting out a push backoff, a parked push or a disconnection do not count:
        nothing of the event sync's is in flight then, and yielding would only slow the
        transfers for nothing. ``changed`` is notified whenever this turns False.
        """
        if self.writes_in_flight:
            return True
        return (
            self.phase == "connected"
            and self.push.phase in ("ready", "in_flight", "catching_up")
            and self.state.unacknowledged_count > 0
        )

    def trace(self, what: str, **details: object) -> None:
        if self._trace is not None:
            try:
                self._trace(what, details)
            except Exception:
                # The application's hook: its bug must not stop the engine half-way
                # through a step (commits written to the store and not noted in memory).
                self._trace_failures += 1
                log = logger.exception if self._trace_failures == 1 else logger.debug
                log("the trace hook raised at %r (ignored; later failures at DEBUG)", what)

    def notify(self, kind: str, **fields: object) -> None:
        """Publishes a notification on the bus (never waits)."""
        self.bus.publish(kind, **fields)

    def stuck_on_refused(self) -> tuple[Event, str] | None:
        """The event the server's limits refuse that this client is stuck on, and why:
        :meth:`SyncState.refused_first_pending`, with no push in flight. ``reset()`` may
        then set it aside."""
        return None if self.push.in_flight else self.state.refused_first_pending()

    def note_refused_head(self) -> None:
        """Says when the client is stuck on an event the server's limits refuse (see
        :meth:`stuck_on_refused`), until the application sets it aside."""
        refused = self.stuck_on_refused()
        if refused is None:
            return
        event, why = refused
        message = (
            f"push refused by the server's limits: {why}; no push can carry it (nor, keeping "
            "the order, any event after it): reset() sets it aside in a file and keeps the rest"
        )
        if self.refused_push != message:
            self.refused_push = message
            self.trace("push.refused_by_limits", client_seq=event.client_seq)
            self.changed.notify()

    def check_run(self) -> None:
        """Raises RuntimeError unless called from the Trio run that opened the client
        (see ``_runs.py``)."""
        check_run(self._trio_token)

    @property
    def failing_fast(self) -> bool:
        return self.fast_failures.stuck or self.refused_push is not None

    def status(self) -> SyncStatus:
        self.observe()
        progress = self.catch_up.progress(
            trio.current_time(), upstream_head=self.durable_head, server_head=self.server_head
        )
        return derive_status(
            self.phase,
            pending=self.state.unacknowledged_count,
            # What the store holds, so that "synced" implies confirmed_events() is complete.
            upstream_head=self.durable_head,
            server_head=self.server_head,
            stuck=self.stuck,
            last_error=self.refused_push or self.last_error or self.push.last_error,
            failing_fast=self.failing_fast,
            connect_attempts=self.connect_attempts,
            progress=progress,
            last_synced_at=self.last_synced_at,
            since=self._since,
            now=self.wall_clock(),
            files=self.file_transfers,
        )

    def observe(self) -> None:
        """Notes a change of state: when it happened, and the notifications it brings."""
        state = derive_state(
            self.phase,
            pending=self.state.unacknowledged_count,
            upstream_head=self.durable_head,
            server_head=self.server_head,
            stuck=self.stuck,
            failing_fast=self.failing_fast,
            uploads_pending=self.file_transfers.uploads_pending,
            uploads_failed=self.file_transfers.uploads_failed,
        )
        if state == "synced":
            self.last_synced_at = self.wall_clock()
        previous = self._state
        if state == previous:
            return
        self._state = state
        self._since = self.wall_clock()
        if state == "synced":
            self.notify("sync.complete", head=self.durable_head)
            self.writer.note_synced(self.last_synced_at or self._since)
        elif state == "syncing" and previous in (None, "synced", "stuck"):
            self.notify(
                "sync.start",
                pending=self.state.unacknowledged_count,
                behind=max(0, (self.server_head or 0) - self.durable_head),
            )
        elif state == "stuck":
            self.notify(
                "sync.stuck",
                reason=self.refused_push or self.last_error or self.file_transfers.upload_error,
            )
        elif state == "incompatible":
            self.notify("incompatible", reason=self.last_error)

    def set_phase(self, phase: ConnectionPhase, error: str | None = None) -> None:
        if phase == "connected" and self.phase != "connected":
            self.notify("connection.online")
        elif phase != "connected" and self.phase == "connected":
            self.notify("connection.offline", reason=error)
        self.phase = phase
        if error is not None or phase == "connected":
            self.last_error = error
        if phase != "connected":
            self.stuck = False
        self.trace("phase", phase=phase, error=error)
        self.phase_changed.notify()
        self.changed.notify()

    async def on_connected(self, welcome: Welcome) -> None:
        """The handshake succeeded: remember the server on first contact and the limits it
        announced (commits follow them, offline too), report connected."""
        if self.known_server_id is None:
            await self.run_store(self.store.record_server_id, welcome.server_id)
            self.known_server_id = welcome.server_id
        if welcome.limits != self.state.limits:
            await self.run_store(self.store.record_limits, welcome.limits)
            self.state.limits = welcome.limits
        self.connect_attempts = 0
        self.incompatible = None
        self.server_lost_events = False
        self.set_phase("connected")
        self.note_fresh_server_head(welcome.head)

    def start_lineage(self, state: SyncState, push: PushMachine) -> None:
        """The store was reset (``Client.reset()``): forget the server and the log."""
        self.lineage += 1
        self.incompatible = None
        self.server_lost_events = False
        self.state = state
        self.push = push
        self.durable_head = state.upstream_head
        self.server_head = None
        self.known_server_id = None
        self.stuck = False
        self.refused_push = None
        self.fast_failures.on_stable()
        self.last_error = None
        self.last_synced_at = None
        self.catch_up = CatchUpMeter()
        for listener in tuple(self.merge_listeners):  # a listener may leave
            listener(())  # nothing applied, but the log below them changed
        self.heads_changed.notify()
        self.changed.notify()

    def request_head(self) -> None:
        """Asks the connected session (now or when one connects) to ask for the head."""
        self.head_wanted.set()

    def note_fresh_server_head(self, head: int) -> None:
        """The server just reported its head (a welcome or a pong)."""
        self.note_server_head(head)
        self.head_reports += 1
        self.changed.notify()

    def note_server_head(self, head: int) -> None:
        if self.server_head is None or head > self.server_head:
            self.server_head = head
            self.catch_up.observe(
                trio.current_time(), upstream_head=self.durable_head, server_head=head
            )
            self.heads_changed.notify()

    def note_history_received(self, received: int) -> None:
        """Bytes of history arrived (for the catch-up progress)."""
        self.catch_up.observe(
            trio.current_time(),
            upstream_head=self.durable_head,
            server_head=self.server_head,
            received=received,
        )

    # --- what the writer reports, applied in memory in the order it was written --------

    def note_commits(self, events: Sequence[Event]) -> None:
        """Commits are durable: they are pending now (one wake-up for the lot)."""
        for event in events:
            self.state.add_pending(event)
            self.trace("commit", client_seq=event.client_seq, name=event.name)
        self.changed.notify()

    def note_merge(self, result: Advance | Rebase) -> None:
        """A merged upstream batch is written: apply it, restart pushing as the policy says."""
        self.state.apply_merge(result)
        self.durable_head = self.state.upstream_head
        for listener in tuple(self.merge_listeners):  # a listener may leave
            listener(result.applied)
        now = trio.current_time()
        progress = self.catch_up.progress(
            now, upstream_head=self.durable_head, server_head=self.server_head
        )
        self.catch_up.observe(now, upstream_head=self.durable_head, server_head=self.server_head)
        if progress is not None and now - self._progress_published_at >= PROGRESS_INTERVAL:
            self._progress_published_at = now
            self.notify(
                "pull.progress",
                done=progress.done,
                total=progress.total,
                bytes=progress.bytes,
                rate=progress.rate,
                eta=progress.eta,
            )
        self.heads_changed.notify()
        self.trace(
            f"pull.{result.kind}",
            applied=len(result.applied),
            own=len(result.confirmed_own),
            head=self.state.upstream_head,
        )
        self.push.on_upstream_change(result.kind, self.state)
        self.changed.notify()

    # --- what the connection brings -------------------------------------------------

    async def merge(self, events: Sequence[Event], *, size: int = 0) -> MergeResult:
        """Merges upstream events: evaluated now, written by the writer, then applied.

        Durable first, then in memory: nothing moves unless the write succeeds, and the
        next pull asks again from the same head. ``size``: the bytes that brought them
        (0: unknown), which decide with their count where they are written.

        Raises:
            StoreError: The local store could not be written.
        """
        result = self.state.evaluate_merge(events)
        if isinstance(result, Refused):
            self.trace("pull.refused", reason=result.reason)
        elif result.applied:
            await self.writer.merge(result, size=size)
        return result

    def acknowledge(self, ack: PushAck) -> None:
        """Takes a push ack: in memory at once; on disk with the writer's next batch (an
        ack lost in a crash only means pushing those events again).

        Raises:
            ProtocolError: The ack names events this client never committed.
        """
        if ack.seqs:
            self.state.acknowledge(ack.first_client_seq, len(ack.seqs))
            self.writer.note_ack(self.state.acked_through)
            self.note_server_head(max(ack.seqs))
            self.refused_push = None
        self.trace("push.ack", push_id=ack.push_id, count=len(ack.seqs))
        self.notify("push.ack", count=len(ack.seqs), acked_through=self.state.acked_through)
        self.push.on_ack(ack.push_id, trio.current_time())
        self.changed.notify()
