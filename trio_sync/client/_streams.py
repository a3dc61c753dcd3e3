"""The client's async iterators: the confirmed events as they are stored, and the sync
status as its facts change. Both end once the client has closed (after what they hold:
the events read, the final status), so a task iterating beside the client's block ends
with it."""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Sequence

import trio

from ..protocol import Event, SyncStatus
from ._core import ClientCore

#: How many confirmed events ``confirmed_stream`` reads from the store at a time.
_STREAM_PAGE = 500
#: ``confirmed_stream`` reads on the event loop when at most this many events are new.
_INLINE_READ = 100


class ConfirmedStream:
    """Reads what is new from the store; once caught up, takes each merge's events as it
    is applied (no read back, no decoding again), until more than a page of them waits
    unread: then it reads from the store again, so a slow reader holds a page at most."""

    def __init__(self, core: ClientCore, is_closed: Callable[[], bool], after: int) -> None:
        self._core = core
        self._is_closed = is_closed
        self._cursor = after
        self._buffer: deque[Event] = deque()
        self._listening = False
        #: The log it follows (``reset()`` starts a new one).
        self._lineage = core.lineage

    def __aiter__(self) -> ConfirmedStream:
        return self

    async def __anext__(self) -> Event:
        core = self._core
        while True:
            if self._lineage != core.lineage:
                # reset() replaced the log: what was read of the old one means nothing now.
                self._lineage = core.lineage
                self._cursor = 0
                self._buffer.clear()
            if self._buffer:
                return self._buffer.popleft()
            if self._is_closed():
                raise StopAsyncIteration
            core.check_run()  # once per batch taken: it waits, or reads, from here on
            changed = core.changed.event
            if self._cursor < core.durable_head:
                if core.durable_head - self._cursor <= _INLINE_READ:
                    # A few events just written: a read from the page cache costs less
                    # than a hop to a worker thread (the reader never waits for a writer).
                    await trio.lowlevel.checkpoint_if_cancelled()
                    events = core.store.confirmed_events(self._cursor, _STREAM_PAGE)
                else:
                    events = await core.run_store(
                        core.store.confirmed_events, self._cursor, _STREAM_PAGE
                    )
                if self._lineage == core.lineage:  # else read across a reset: read again
                    self._buffer.extend(events)
                    if events:
                        self._cursor = events[-1].seq or self._cursor
            else:
                if not self._listening:
                    self._listen(core)
                await changed.wait()

    def _listen(self, core: ClientCore) -> None:
        # Weakly: a stream the application dropped is freed, and its listener goes.
        method = weakref.WeakMethod(self._take)
        listeners = core.merge_listeners

        def listener(events: Sequence[Event]) -> None:
            take = method()
            if take is None or not take(events):
                listeners.remove(listener)

        listeners.append(listener)
        self._listening = True

    def _take(self, events: Sequence[Event]) -> bool:
        """A merge applied ``events``; False: stop listening (read from the store)."""
        if (
            events
            and events[0].seq == self._cursor + 1
            and len(self._buffer) + len(events) <= _STREAM_PAGE
        ):
            self._buffer.extend(events)
            self._cursor = events[-1].seq or self._cursor
            return True
        self._listening = False  # a reset (no events), a gap, or a reader far behind
        return False


class StatusChanges:
    def __init__(self, core: ClientCore, is_closed: Callable[[], bool]) -> None:
        self._core = core
        self._is_closed = is_closed
        self._last: SyncStatus | None = None

    def __aiter__(self) -> StatusChanges:
        return self

    async def __anext__(self) -> SyncStatus:
        core = self._core
        while True:
            if not self._is_closed():
                core.check_run()
            changed = core.changed.event
            status = core.status()
            if self._last is None or _what_changed(status) != _what_changed(self._last):
                self._last = status
                return status
            if self._is_closed():
                raise StopAsyncIteration  # after the final status ("disconnected")
            await changed.wait()


def _what_changed(status: SyncStatus) -> tuple[object, ...]:
    # Not the clock readings (last_synced_at moves on while synced; rate and ETA with
    # time): a change is a change of the facts.
    progress = status.progress
    return (
        status.state,
        status.pending,
        status.upstream_head,
        status.server_head,
        status.connected,
        status.last_error,
        status.connect_attempts,
        None if progress is None else (progress.done, progress.total),
    )
