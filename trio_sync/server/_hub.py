"""The server's shared state: its stores, the one group-commit writer, the live sessions,
the health of its storage, and shutting down gracefully.

All pushes, of every store, go through one writer task, which takes every push waiting at
that moment and applies them in one transaction (one fsync), then answers each. A store's
live view (:class:`StoreLog`) exists while a connection uses it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from .._broadcast import Broadcast
from .._errors import StoreError, TrioSyncError
from .._store_runner import StoreRunner, WritePlacement, run_durable
from ..protocol import Accept, Ahead, Event, Push, PushDecision, Reject, TokenClaims, check_token
from ..store import PushRequest, ServerLog, StoreInfo
from ._limits import ServerLimits
from ._log import StoreLog
from ._metrics import ServerMetrics

if TYPE_CHECKING:
    from ._session import ServerSession

logger = logging.getLogger("trio_sync.server")

#: Seconds a health answer is reused (a /healthz flood must not become a write flood).
HEALTH_CACHE_SECONDS = 2.0

#: Seconds a health question waits for a fresh check before it is answered with what is
#: known (a check of a database that is down may take a while; a load balancer's health
#: check has a short timeout of its own). The check goes on, for the next question.
HEALTH_WAIT_SECONDS = 0.5


class TooManyStores(TrioSyncError):
    """Creating one more store would pass ``max_stores``."""


class InternalError(TrioSyncError):
    """The server failed in a way that is its own fault (logged with the traceback)."""


@attrs.frozen
class HubConfig:
    """What a server is configured with.

    Attributes:
        schema: The application schema (name, version) clients must speak.
        limits: What it accepts.
        create_stores: Whether a connection to an unknown store creates it (else refused).
        auth_secrets: Secrets that sign tokens; empty: no tokens required.
    """

    schema: tuple[str, int] = ("default", 1)
    limits: ServerLimits = attrs.field(factory=ServerLimits)
    create_stores: bool = False
    auth_secrets: tuple[bytes, ...] = attrs.field(default=(), repr=False)


@attrs.define
class _PushJob:
    request: PushRequest
    done: trio.Event = attrs.field(factory=trio.Event)
    decision: PushDecision | None = None
    error: TrioSyncError | None = None


class Hub:
    """What every connection of one server shares."""

    def __init__(
        self,
        db: ServerLog,
        run_store: StoreRunner,
        config: HubConfig,
        metrics: ServerMetrics | None = None,
        *,
        max_group: int = 64,
        placement: WritePlacement | None = None,
    ) -> None:
        self.db = db
        self.run_store = run_store
        #: Where appends run: on the event loop while the disk is fast (a local SQLite
        #: log; see ``WritePlacement``), else always through ``run_store``.
        self._placement = placement
        #: Held while a group is appended (by the writer task, or by a session itself): one
        #: append at a time, in the order decided.
        self._appending = trio.Lock()
        #: The pushes a session appending its own push gathers (None: none is).
        self._gathering: list[_PushJob] | None = None
        self.config = config
        self.metrics = metrics or ServerMetrics()
        self._max_group = max_group
        self._logs: dict[str, StoreLog] = {}
        #: Held while a store is created (see open_store).
        self._creating = trio.Lock()
        self._send_job, self._jobs = trio.open_memory_channel[_PushJob](math.inf)
        #: Every live session, and the one of each (store, client id).
        self.sessions: set[ServerSession] = set()
        self._by_client: dict[tuple[str, str], ServerSession] = {}
        self._sessions_changed = Broadcast()
        self.draining = False
        #: The secrets that verify tokens now (replaced by a reload; empty: no tokens).
        self.auth_secrets: tuple[bytes, ...] = config.auth_secrets
        self._storage_problem: str | None = None
        self._health_checked = -math.inf
        #: Whether run_health_checks() runs (else a health question checks by itself).
        self._health_checker = False
        self._health_wanted = trio.Event()
        #: Set when the check in progress (None: none) is done.
        self._health_round: trio.Event | None = None
        self.metrics.count_live_traffic(self._live_traffic)
        self.metrics.healthy.set(1)

    def authorize(self, token: str | None, *, store_id: str, client_id: str) -> TokenClaims | None:
        """Checks a connection's token against this server's secrets, for sync and blob
        connections alike (None: this server requires no tokens).

        Raises:
            TokenError: No token, or one that does not open ``store_id`` for ``client_id``.
        """
        if not self.auth_secrets:
            return None
        return check_token(
            token, self.auth_secrets, store_id=store_id, client_id=client_id, now=time.time()
        )

    def reload_auth_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """Verifies tokens with ``secrets`` from now on (connections already open keep
        running until their token expires).

        Raises:
            ValueError: The server was started without secrets (tokens cannot be turned
                on or off while it runs), or ``secrets`` is empty.
        """
        if not self.auth_secrets or not secrets:
            raise ValueError("tokens can be turned on or off only by a restart")
        self.auth_secrets = secrets
        logger.info("token secrets reloaded: %d secret(s)", len(secrets))

    # --- stores -----------------------------------------------------------------------

    async def open_store(self, store_id: str) -> StoreLog | None:
        """The live view of ``store_id``, created on first use if the server may create
        stores; None when the store does not exist and may not be created.

        Raises:
            StoreError: The database could not be read or written.
        """
        log = self._logs.get(store_id)
        if log is not None:
            return log
        info = await self.run_store(self.db.store, store_id)
        if info is None:
            if not self.config.create_stores:
                return None
            # One creation at a time on this node, so that connections asking for new
            # stores at once cannot all pass the count below (nodes sharing a log may
            # still pass it together, by one store each at most).
            async with self._creating:
                info = await self.run_store(self.db.store, store_id)
                if info is None:
                    info = await self._create_store(store_id)
        log = self._logs.get(store_id)  # another connection may have opened it meanwhile
        if log is None:
            log = StoreLog(
                info,
                tail_budget=self._tail_share,
                max_tail_events=self.config.limits.max_page_events * 20,
            )
            self._logs[store_id] = log
            for other in self._logs.values():
                other.trim()
            self.metrics.stores_open.set(len(self._logs))
        return log

    async def _create_store(self, store_id: str) -> StoreInfo:
        # Counted in the database: with a shared log, other nodes create stores too.
        if await self.run_store(self.db.store_count) >= self.config.limits.max_stores:
            raise TooManyStores(
                f"store {store_id!r} cannot be created: the server holds "
                f"{self.config.limits.max_stores} stores (max_stores)"
            )
        info = await self.run_store(self.db.create_store, store_id)
        logger.info("created store %r (identity %s)", store_id, info.server_id)
        return info

    def _tail_share(self) -> int:
        return self.config.limits.max_tail_bytes // max(1, len(self._logs))

    def _release_store(self, log: StoreLog) -> None:
        if log.connections == 0 and self._logs.get(log.store_id) is log:
            del self._logs[log.store_id]
            self.metrics.stores_open.set(len(self._logs))

    async def last_client_seq(self, store_id: str, client_id: str) -> int:
        """The highest client_seq ``store_id`` holds from ``client_id`` (0: none, or no
        such store).

        Raises:
            StoreError: The database could not be read.
        """
        return await self.run_store(partial(self.db.last_client_seq, client_id, store_id=store_id))

    async def read(self, log: StoreLog, after: int, max_bytes: int) -> list[Event]:
        """The next page of ``log`` after seq ``after``, of events up to ``max_bytes`` (at
        least one), from memory when recent."""
        limits = self.config.limits
        events = log.read_tail(after, limits.max_page_events, max_bytes)
        if events is not None:
            return events
        read = partial(self.db.read, store_id=log.store_id, max_bytes=max_bytes)
        return await self.run_store(read, after, limits.max_page_events)

    # --- heads learned from the database (a log shared by several nodes) ---------------

    def open_store_ids(self) -> list[str]:
        """The stores some connection of this node uses now."""
        return list(self._logs)

    async def learn_heads(self, heads: dict[str, int]) -> None:
        """Another node appended: each store of ``heads`` this node serves is brought up
        to its head, so its pullers get the new events."""
        for store_id, head in heads.items():
            log = self._logs.get(store_id)
            if log is not None and head > log.head:
                await self.catch_up(log, head)

    async def catch_up(self, log: StoreLog, head: int | None = None) -> None:
        """Reads the events of ``log`` this node has not seen (up to ``head``, or the
        database's head) and publishes them, as if they had been appended here: the
        pullers of every node are fed by the same path.

        Raises:
            StoreError: The database could not be read.
        """
        if head is None:
            head = (await self.run_store(self.db.heads, [log.store_id])).get(log.store_id, 0)
        limit = self.config.limits.max_page_events * 20
        while log.head < head:
            # Far behind: only the newest part goes to the tail; older reads go to the
            # database (publish() drops a tail that would have a gap).
            after = max(log.head, head - limit)
            read = partial(self.db.read, store_id=log.store_id)
            events = await self.run_store(read, after, head - after)
            if not events:
                return
            log.publish(events)
        self.metrics.tail_bytes.set(sum(log.tail_bytes for log in self._logs.values()))

    # --- sessions ---------------------------------------------------------------------

    def add_session(self, session: ServerSession, log: StoreLog, client_id: str) -> None:
        """Registers a session that said hello; an older session of the same client and
        store is replaced (its connection is a dead one the client has left, or a
        duplicate)."""
        key = (log.store_id, client_id)
        previous = self._by_client.get(key)
        if previous is not None:
            logger.info(
                "client %r of store %r reconnected from %s: closing its older connection",
                client_id,
                log.store_id,
                session.peer,
            )
            previous.stop(f"replaced by a newer connection of client {client_id!r}")
        self._by_client[key] = session
        log.connections += 1
        self.metrics.connections.inc()
        self.metrics.connections_opened.inc()

    def remove_session(self, session: ServerSession, log: StoreLog, client_id: str) -> None:
        if self._by_client.get((log.store_id, client_id)) is session:
            del self._by_client[(log.store_id, client_id)]
        log.connections -= 1
        self.metrics.connections.dec()
        self._release_store(log)

    def track(self, session: ServerSession) -> None:
        self.sessions.add(session)

    def untrack(self, session: ServerSession) -> None:
        self.sessions.discard(session)
        self.metrics.closed_bytes_sent += session.bytes_sent
        self.metrics.closed_bytes_received += session.bytes_received
        self._sessions_changed.notify()

    def _live_traffic(self) -> tuple[int, int]:
        return (
            sum(session.bytes_sent for session in self.sessions),
            sum(session.bytes_received for session in self.sessions),
        )

    async def drain(self, grace: float) -> None:
        """Stops taking messages; lets in-flight pushes commit and be answered; closes every
        connection with 1001 (going away). Returns when all are closed, or after ``grace``
        seconds."""
        self.draining = True
        logger.info("shutting down: %d connection(s) to close", len(self.sessions))
        for session in list(self.sessions):
            session.stop("the server is shutting down", going_away=True)
        with trio.move_on_after(grace):
            while self.sessions:
                changed = self._sessions_changed.event
                if self.sessions:
                    await changed.wait()

    # --- pushes -----------------------------------------------------------------------

    # Ctrl-C is held back in here and in _apply (Trio delivers it to the main task at
    # its next checkpoint instead): raised between opening a gathering and its try, or
    # between a durable append and the decisions it hands out, it would leave every later
    # push waiting on a gathering nobody appends, or sessions waiting for ever.
    @trio.lowlevel.enable_ki_protection
    async def push(self, log: StoreLog, client_id: str, push: Push) -> PushDecision:
        """Queues a push for the writer and returns its decision once it is durable.

        Raises:
            StoreError: The server could not write (StoreFull: its disk is full); the push
                may be retried later.
            InternalError: The writer failed in an unexpected way (logged).
        """
        job = _PushJob(PushRequest(log.store_id, client_id, push))
        placement = self._placement
        if self._gathering is not None:
            self._gathering.append(job)  # a push being led: share its transaction
            await job.done.wait()
        elif (
            placement is not None
            and placement.inline
            and not self._appending.locked()
            and not self._jobs.statistics().current_buffer_used
        ):
            await self._lead(job)
        else:
            self._send_job.send_nowait(job)
            await job.done.wait()
        if job.error is not None:
            error, job.error = job.error, None
            try:
                raise error
            finally:
                # This frame is in the error's traceback: holding the error here (or in
                # the job) would keep the session's frames in a reference cycle.
                del error
        assert job.decision is not None
        return job.decision

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The group-commit writer; runs until cancelled."""
        task_status.started()
        async for first in self._jobs:
            group = [first]
            while len(group) < self._max_group:
                try:
                    group.append(self._jobs.receive_nowait())
                except trio.WouldBlock:
                    break
            async with self._appending:  # a session may be appending its own push
                await self._apply(group)

    async def _lead(self, job: _PushJob) -> None:
        """Appends ``job`` in this task, with every push that arrives meanwhile (group
        commit without the writer task, one switch to it and back saved): first every
        other task ready to run has its turn, and the pushes they receive join."""
        gathered = self._gathering = [job]
        self._appending.acquire_nowait()  # free: push() looked
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._gathering = None
            # Shielded: the others' pushes are in it too.
            with trio.CancelScope(shield=True):
                await self._apply(gathered)
        finally:
            self._gathering = None
            self._appending.release()

    @trio.lowlevel.enable_ki_protection  # see push
    async def _apply(self, group: list[_PushJob]) -> None:
        started = time.perf_counter()
        try:
            decisions = await run_durable(
                self._placement, self.run_store, self.db.apply_pushes, [j.request for j in group]
            )
        except StoreError as exc:
            logger.debug("could not write %d push(es): %s", len(group), exc)
            self._note_storage(str(exc))
            self._fail(group, exc)
            return
        except Exception:
            logger.exception("the writer failed on %d push(es)", len(group))
            self._fail(group, InternalError("internal server error while writing"))
            return
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        # A write went through; it does not prove the file is still the one opened (it may
        # have been deleted), so the health check still runs its own.
        self._note_storage(None, checked=False)
        for job, decision in zip(group, decisions, strict=True):
            self._count(decision)
            if isinstance(decision, Accept) and decision.new:
                log = self._logs.get(job.request.store_id)
                if log is not None:
                    log.publish(decision.new)
                self.metrics.events_appended.inc(len(decision.new))
            job.decision = decision
            job.done.set()
        self.metrics.tail_bytes.set(sum(log.tail_bytes for log in self._logs.values()))

    @staticmethod
    def _fail(group: list[_PushJob], error: TrioSyncError) -> None:
        for job in group:
            # One exception each: every waiting session raises it through its own frames
            # (and lets go of them, release_frames), none through another's.
            job.error = copy.copy(error)
            job.done.set()

    def _count(self, decision: PushDecision) -> None:
        if isinstance(decision, Accept):
            result = "accepted"
        elif isinstance(decision, Ahead):
            result = "server_ahead"
        else:
            assert isinstance(decision, Reject)
            result = f"rejected_{decision.code}"
        self.metrics.pushes.labels(result).inc()

    # --- health -----------------------------------------------------------------------

    def _note_storage(self, problem: str | None, *, checked: bool = True) -> None:
        if problem != self._storage_problem:
            if problem is None:
                logger.info("storage is writable again")
            else:
                logger.error("storage cannot be written (pushes refused until it can): %s", problem)
            self._storage_problem = problem
            self.metrics.healthy.set(0 if problem else 1)
        if checked:
            self._health_checked = time.monotonic()

    async def storage_problem(self) -> str | None:
        """Why the database cannot be written now (None: it can). Checked with a small
        write (and a look at the file) at most every few seconds; a failed push counts as
        a check.

        Answers within :data:`HEALTH_WAIT_SECONDS` while :meth:`run_health_checks` runs:
        a check that takes longer (a database that does not answer) goes on in the
        background, and the answer is the last one known until it ends.
        """
        if time.monotonic() - self._health_checked > HEALTH_CACHE_SECONDS:
            if not self._health_checker:
                await self._check_storage()
                return self._storage_problem
            if self._health_round is None:
                self._health_round = trio.Event()
                self._health_wanted.set()
            with trio.move_on_after(HEALTH_WAIT_SECONDS):
                await self._health_round.wait()
        return self._storage_problem

    async def run_health_checks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Runs the checks that :meth:`storage_problem` asks for, one at a time, until
        cancelled."""
        self._health_checker = True
        task_status.started()
        try:
            while True:
                await self._health_wanted.wait()
                self._health_wanted = trio.Event()
                try:
                    await self._check_storage()
                except Exception:
                    logger.exception("the storage check failed")
                    self._note_storage("internal error while checking the storage")
                finally:
                    done, self._health_round = self._health_round, None
                    if done is not None:
                        done.set()
        finally:
            self._health_checker = False

    async def _check_storage(self) -> None:
        try:
            await self.run_store(self.db.check_writable)
        except StoreError as exc:
            self._note_storage(str(exc))
        else:
            self._note_storage(None)
