"""A broadcast "something changed" signal for many waiters."""

from __future__ import annotations

import trio


class Broadcast:
    """Wakes every waiter on each :meth:`notify`; waiters re-check their own condition.

    Take the event *before* checking the condition so a change in between is not missed::

        while True:
            changed = broadcast.event
            if condition():
                break
            await changed.wait()
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    @property
    def event(self) -> trio.Event:
        """The event the next :meth:`notify` sets."""
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()
