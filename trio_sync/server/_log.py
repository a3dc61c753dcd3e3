"""The server's live view of its log: head, change notification, group commit, recent tail.

All pushes go through one writer task, which takes every push waiting at that moment and
applies them in one transaction (one fsync), then answers each. Pullers read recent events
from an in-memory tail and older ones from the store, so a slow or dead client only ever
holds up its own connection: there is no per-client queue to fill.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from itertools import islice

import attrs
import trio

from .._broadcast import Broadcast
from .._errors import StoreError
from .._store_runner import StoreRunner
from ..protocol import Accept, Event, Push, PushDecision
from ..store import ServerStore

logger = logging.getLogger("trio_sync.server")


@attrs.define
class _PushRequest:
    client_id: str
    push: Push
    done: trio.Event = attrs.field(factory=trio.Event)
    decision: PushDecision | None = None
    error: StoreError | None = None


class ServerLog:
    """The server's log as the connections see it."""

    def __init__(
        self,
        store: ServerStore,
        run_store: StoreRunner,
        *,
        tail_size: int = 10_000,
        max_group: int = 64,
    ) -> None:
        self.store = store
        self._run_store = run_store
        self._max_group = max_group
        self._tail: deque[Event] = deque(maxlen=tail_size)
        self._changed = Broadcast()
        self._send_request, self._requests = trio.open_memory_channel[_PushRequest](math.inf)

    @property
    def head(self) -> int:
        return self.store.head

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The group-commit writer; runs until cancelled."""
        recent = await self._run_store(
            self.store.read, max(0, self.head - (self._tail.maxlen or 0)), self._tail.maxlen or 0
        )
        self._tail.extend(recent)
        task_status.started()
        async for first in self._requests:
            group = [first]
            while len(group) < self._max_group:
                try:
                    group.append(self._requests.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._apply(group)

    async def _apply(self, group: list[_PushRequest]) -> None:
        try:
            decisions = await self._run_store(
                self.store.apply_pushes, [(r.client_id, r.push) for r in group]
            )
        except StoreError as exc:
            logger.error("could not write %d push(es): %s", len(group), exc)
            for request in group:
                request.error = exc
                request.done.set()
            return
        appended = False
        for request, decision in zip(group, decisions, strict=True):
            if isinstance(decision, Accept) and decision.new:
                self._tail.extend(decision.new)
                appended = True
            request.decision = decision
            request.done.set()
        if appended:
            self._changed.notify()

    async def push(self, client_id: str, push: Push) -> PushDecision:
        """Queues a push for the writer and returns its decision once it is durable.

        Raises:
            StoreError: The server could not write (the push may be retried).
        """
        request = _PushRequest(client_id, push)
        self._send_request.send_nowait(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.decision is not None
        return request.decision

    async def read(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events after seq ``after``, from memory when recent enough."""
        if self._tail and after >= self._tail[0].seq - 1:  # type: ignore[operator]
            start = after - (self._tail[0].seq - 1)  # type: ignore[operator]
            return list(islice(self._tail, start, start + limit))
        return await self._run_store(self.store.read, after, limit)

    async def wait_beyond(self, cursor: int) -> None:
        """Returns once the head is past ``cursor``."""
        while True:
            changed = self._changed.event
            if self.head > cursor:
                return
            await changed.wait()
