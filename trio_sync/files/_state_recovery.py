"""A damaged transfer state: moved aside, and rebuilt from what is held here.

The transfer state (``<store>.files``) records, per file and direction, where each
transfer stands. Unlike the sync store it holds nothing that exists nowhere else but one
fact: which contents this client still owes the server (saved here, maybe never
uploaded). Rebuilding it from the synced facts and the contents held here gives that fact
back without knowing it: every file whose contents are here is written as held (its
download ``done``), and the check that runs when the files open (``_repair.py``) asks the
server which of those it lacks and uploads them. Downloads of the rest are queued again
by the reconcile, as on any start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial

import attrs

from ..client._core import ClientCore
from ..store._recovery import Damaged, move_aside, open_or_rebuild
from ..store._sqlite import is_memory
from ._blobs import BlobStore
from ._model import FileInfo, FileTable, TransferState
from ._state import Key, TransferStateStore


@attrs.frozen
class NewState:
    """A transfer state made new at open: it was missing (never made, or deleted by
    hand), or a damaged one was moved aside (to ``moved_to``, for ``reason``)."""

    moved_to: str | None = None
    reason: str | None = None


def open_transfer_state(
    path: str, now: float | None = None
) -> tuple[TransferStateStore, NewState | None]:
    """Opens the transfer state at ``path``; a damaged one is moved aside and a new one
    made. Returns the store and, when it is new, how (:func:`rebuild_state` fills it).

    Raises:
        StoreInUse, StoreVersionError: As for the client store.
        StoreCorrupt: The file is not a trio_sync store at all (never moved).
    """
    existed = is_memory(path) or os.path.exists(path)

    def rebuild(damaged: Damaged) -> tuple[TransferStateStore, NewState]:
        moved_to = move_aside(path, now, damaged.moved_to)
        return TransferStateStore(path), NewState(moved_to, damaged.reason)

    opened = open_or_rebuild(path, partial(TransferStateStore, path), rebuild)
    if isinstance(opened, TransferStateStore):
        return opened, None if existed else NewState()
    return opened


def rows_for_held_contents(
    files: Mapping[str, FileInfo], held: Callable[[str], bool]
) -> list[tuple[Key, TransferState]]:
    """The rows of a rebuilt transfer state: each file whose current contents are held
    here (``held(content_hash)``) has them (download ``done``); deleted files need none."""
    return [
        ((file_id, "download"), TransferState("done", info.content_hash))
        for file_id, info in files.items()
        if not info.deleted and held(info.content_hash)
    ]


async def rebuild_state(
    core: ClientCore,
    states: TransferStateStore,
    blobs: BlobStore,
    view: FileTable,
    new: NewState | None,
) -> None:
    """Fills a new transfer state (None: the one opened was there, nothing to do): what
    is held here is written as held (before the check of lost uploads runs), and a
    ``recovery`` notification says when it replaced a damaged one."""
    if new is None:
        return
    rows = await core.run_store(rows_for_held_contents, dict(view.files), blobs.has)
    if rows:
        await core.run_store(states.set_many, rows)
        core.trace("files.state_rebuilt", held=len(rows))
    if new.moved_to is not None:
        core.notify(
            "recovery",
            what="damaged-transfer-state",
            moved_to=new.moved_to,
            held=len(rows),
            reason=new.reason,
        )
