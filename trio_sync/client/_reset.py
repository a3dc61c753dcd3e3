"""What ``Client.reset()`` does to the store: which events a new lineage keeps, and from
which client_seq they are numbered (the client stops its connection around it)."""

from __future__ import annotations

from functools import partial

import attrs

from ..protocol import Event, PushMachine
from ._core import ClientCore


@attrs.frozen
class ResetReport:
    """What ``Client.reset()`` did.

    Attributes:
        saved_to: The JSON-lines file the pending events were saved to (None: there were
            none, or the store is in memory).
        kept: Pending events recorded again in the new lineage.
        dropped: Pending events not kept (``keep_pending=False``); they are in the file.
    """

    saved_to: str | None
    kept: int
    dropped: int


async def reset_store(
    core: ClientCore, push: PushMachine, *, keep_pending: bool, first_refused: int | None
) -> ResetReport:
    """Saves the events the server does not hold to a file, starts the store afresh with
    those it can take, and the core on the new lineage (under the writer's exclusive
    hold, with the connection stopped); says so in a ``recovery`` notification.

    ``first_refused``: the client is stuck on that event, which the server's limits refuse
    (None: the server is incompatible).

    Raises:
        StoreError: The file or the store could not be written; nothing changed.
    """
    # Stuck on a refused event: the server holds every event before it (they are
    # confirmed here), and none from it on.
    held = core.server_held_client_seq or 0
    first = first_refused or held + 1
    lost: list[Event] = []
    restored = first_refused is None and core.server_lost_events
    if restored:
        # Restored from an older backup: the events of ours it confirmed since are gone
        # from it, and only this store still holds them (pending ones it holds,
        # acknowledged before the backup, are not recorded again).
        lost = await core.run_store(core.store.own_confirmed_after, held)
    considered = core.state.unacknowledged_count + len(lost)
    saved_to, kept = await core.run_store(
        partial(
            core.store.reset_lineage,
            keep_pending=keep_pending,
            first_client_seq=first,
            now=core.wall_clock(),
            keep_if=lambda event: (
                core.state.refusal(event) is None and (not restored or event.client_seq > held)
            ),
            lost=lost,
        )
    )
    state = await core.run_store(core.store.load_state)
    core.start_lineage(state, push)
    report = ResetReport(saved_to=saved_to, kept=kept, dropped=considered - kept)
    core.trace("reset", kept=kept, first_client_seq=first)
    core.notify("recovery", what="reset", saved_to=saved_to, kept=kept, dropped=report.dropped)
    return report
