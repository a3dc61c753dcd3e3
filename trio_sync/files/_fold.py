"""The file table folded from the client's log, and how far each part of it got.

File facts are events: the confirmed ones are folded as merges apply them (from memory)
or, for what came before (the log at open, or after a reset), read back from the store.
The view is the confirmed table with this client's pending file events on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._broadcast import Broadcast
from ..client._core import ClientCore
from ..protocol import Event
from ._model import FILE_EVENTS, FileTable

#: Confirmed events read from the store at a time while folding the file table.
_PAGE = 1000


class FileFold:
    """Follows the log for :class:`FileSync` (see the module's text).

    Attributes:
        view: The files as this client sees them (confirmed facts, its pending on top).
        view_cursor: The log position the view shows (the fold can be ahead of it until
            the next :meth:`refresh_view`).
        settled_cursor: The position up to which the transfers are in line with the facts
            (the downloads of the files learnt are queued): what ``wait_idle()`` waits for.
            Moved by the one who reconciles.
        followed_cursor: Up to where the one who reconciles has tried to (all three
            cursors go back to 0 when a reset starts another log).
        wanted: Notified when there is something to fold: file events merged, or merges
            that came before the fold caught up (merges of other events only move the
            cursor), or a reset.
    """

    def __init__(self, core: ClientCore, wake: Callable[[], None]) -> None:
        self._core = core
        self._wake = wake
        self._confirmed = FileTable()
        self._cursor = 0
        #: The log folded is this lineage's (a reset starts another: fold it anew).
        self._lineage = core.lineage
        #: Files changed by merges folded as they happened, for the next reconcile.
        self._merged: set[str] = set()
        self.wanted = Broadcast()
        self.view = FileTable()
        self.view_cursor = 0
        self.settled_cursor = 0
        #: The position up to which the one who reconciles has reconciled what was
        #: folded, whether or not that worked (settled once no file is unsettled).
        self.followed_cursor = 0
        core.merge_listeners.append(self.on_merged)

    async def catch_up(self) -> set[str]:
        """Folds confirmed events not seen yet; returns the ids they changed."""
        core = self._core
        changed: set[str] = set()
        # Merges seen as they were applied (on_merged) need no read; the store is read
        # only for what came before this fold followed (the log at open).
        changed, self._merged = self._merged, set()
        if self._lineage != core.lineage:
            # The store was reset onto another server's log: fold it from the start, and
            # look again at every file known before, pending ones too (gone from the new
            # log, or dropped with the pending events).
            changed = set(self._confirmed.files) | set(self.view.files)
            self._lineage = core.lineage
            self._confirmed, self._cursor = FileTable(), 0
            self.view_cursor = self.settled_cursor = self.followed_cursor = 0
        while self._cursor < core.durable_head:
            events: list[Event] = await core.run_store(
                core.store.confirmed_events, self._cursor, _PAGE
            )
            # on_merged may have moved on while this read ran: never fold an event twice.
            events = [e for e in events if (e.seq or 0) > self._cursor]
            if not events:
                break
            changed |= self._confirmed.apply_all(events)
            self._cursor = events[-1].seq or self._cursor
        changed |= self.refresh_view()
        return changed

    def author_of(self, file_id: str) -> str | None:
        """The client whose event set the file's current contents (as this client's view
        shows them), or None for a file not known or deleted."""
        info = self.view.files.get(file_id)
        return None if info is None or info.deleted else info.author

    def settle(self) -> bool:
        """The transfers are in line with the facts as far as they were reconciled: the
        settled cursor moves up to ``followed_cursor``. Returns whether it moved."""
        if self.followed_cursor <= self.settled_cursor:
            return False
        self.settled_cursor = self.followed_cursor
        return True

    def on_merged(self, applied: Sequence[Event]) -> None:
        """The client applied upstream events: fold the file events among them now, from
        memory, instead of reading every confirmed event back from the store."""
        if not applied or self._lineage != self._core.lineage:
            self.wanted.notify()  # the store was reset: _catch_up folds anew
            return
        if applied[0].seq != self._cursor + 1:
            self.wanted.notify()  # not caught up yet: _catch_up reads the store
            return
        file_events = [e for e in applied if e.name in FILE_EVENTS]
        # Folded and settled (transfers queued) up to here, nothing in between.
        all_current = self.view_cursor == self.settled_cursor == self._cursor
        self._cursor = applied[-1].seq or self._cursor
        if file_events:
            self._merged |= self._confirmed.apply_all(file_events)
            self.wanted.notify()
        elif all_current:
            # No file fact changed, and no pending file event was confirmed (it would be
            # among them): the view and the transfers stand as they are, at the new
            # position.
            self.view_cursor = self.settled_cursor = self._cursor
            self._wake()
        else:
            self.wanted.notify()

    def refresh_view(self) -> set[str]:
        """The confirmed files with this client's pending file events on top (they show at
        once; the server's order decides once they are confirmed)."""
        pending = [e for e in self._core.state.pending if e.name in FILE_EVENTS]
        before = self.view.files
        view = self._confirmed.copy() if pending else FileTable(self._confirmed.files)
        view.apply_all(pending)
        self.view = view
        self.view_cursor = self._cursor
        changed = {fid for fid, info in view.files.items() if before.get(fid) != info}
        self._wake()
        return changed
