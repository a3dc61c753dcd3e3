"""What belongs to one Trio run: a client's tasks, waits and iterators.

Another run (``trio.run`` in another thread) must not touch them: a wake-up it makes
lands in the wrong run's scheduler, which Trio answers by crashing the run that owns the
task (``TrioInternalError``). So the calls that wait or start work check the run first.
"""

from __future__ import annotations

import trio


def current_run() -> trio.lowlevel.TrioToken | None:
    """The calling Trio run's token (None outside any)."""
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None


def check_run(owner: trio.lowlevel.TrioToken | None) -> None:
    """Raises RuntimeError unless called from the run ``owner`` (None: no check).

    Raises:
        RuntimeError: Called from another Trio run, or from outside any.
    """
    if owner is not None and current_run() is not owner:
        raise RuntimeError(
            "this client belongs to the Trio run that opened it (its open_client block): "
            "call it from there (from another thread: trio.from_thread.run)"
        )
