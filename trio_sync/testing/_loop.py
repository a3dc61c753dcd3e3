"""No I/O poll in a scheduler pass that cannot receive any.

Trio's run loop asks its I/O manager for events on every pass, with a timeout of 0 while
tasks are runnable (and, under an autojumping clock, always): one ``epoll_wait`` system
call per pass, a few thousand per simulated run. In a simulation nothing but Trio's own
wake-up socket is registered, and that socket is written only when ``run_sync_soon`` queues
a callback (from another thread, or a signal handler). So while that queue is empty and
nothing else is registered, a poll with no timeout has nothing to find, and is skipped.
"""

from __future__ import annotations

from typing import Any

from trio._core._run import GLOBAL_RUN_CONTEXT


class _QuietIO:
    """Wraps the run's I/O manager; only ``get_events`` differs."""

    def __init__(self, io: Any, entries: Any) -> None:
        self._io = io
        self._entries = entries
        self._wakeup_fd = entries.wakeup.wakeup_sock.fileno()

    def get_events(self, timeout: float) -> Any:
        if timeout == 0 and not self._entries.queue and not self._entries.idempotent_queue:
            registered = self._io._registered
            if not registered or (len(registered) == 1 and self._wakeup_fd in registered):
                return []
        return self._io.get_events(timeout)

    def process_events(self, events: Any) -> None:
        # Called on every pass too: spelled out, not through __getattr__.
        if events:
            self._io.process_events(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


def skip_idle_polls() -> None:
    """From inside ``trio.run``: skips the I/O polls that cannot find anything."""
    runner = GLOBAL_RUN_CONTEXT.runner
    if not isinstance(runner.io_manager, _QuietIO):
        runner.io_manager = _QuietIO(runner.io_manager, runner.entry_queue)  # type: ignore[assignment]
