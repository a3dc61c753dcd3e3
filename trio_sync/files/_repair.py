"""Uploads the server lost: ask which ones, and upload them again.

A blob this client uploaded can vanish from the server afterwards: its disk rotted it and
the server set it aside (``server/_blob_upkeep.py``), or its operator restored an older
backup. Every other client then waits for contents only this one may still hold. So when
the files open (beside the recovery of stale transfers), and again every
``FileOptions.check_lost_every`` seconds (5 minutes; not on a reconnect), the client asks
the server, on one blob connection and in ``blob_check`` messages of up to 1,000 hashes,
which of the blobs it uploaded (upload ``done``, contents still held here) it lacks, and
queues those uploads again. A client that stays open for days thus heals a rotten copy
within minutes, not at its next start.

What to ask and what to queue again are pure (:func:`uploads_to_check`,
:func:`uploads_to_repeat`); :func:`repair_lost_uploads` waits for the connection, asks
(again after a backoff when the question fails) and queues.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import trio

from ..client._core import ClientCore
from ._blobs import BlobStore
from ._executor import TransferExecutor
from ._model import Direction, TransferState
from ._options import FileOptions
from ._queue import RetryPolicy
from ._state import TransferStateStore
from ._wire import BlobClient, TransferFailed

logger = logging.getLogger("trio_sync.files")

Key = tuple[str, Direction]


def uploads_to_check(
    rows: Mapping[Key, TransferState], held: Collection[str]
) -> dict[str, list[str]]:
    """The uploads worth asking the server about: done, their contents still held here
    (``held``: the local blob store's hashes). Returns the file ids by content hash."""
    found: dict[str, list[str]] = {}
    for (file_id, direction), state in sorted(rows.items()):
        if direction == "upload" and state.status == "done" and state.content_hash in held:
            found.setdefault(state.content_hash, []).append(file_id)
    return found


def uploads_to_repeat(
    rows: Mapping[Key, TransferState], asked: Mapping[str, list[str]], missing: Collection[str]
) -> list[tuple[Key, TransferState]]:
    """The uploads to queue again: those asked about whose contents the server lacks, if
    they are still done for those contents (a file deleted or changed meanwhile is not)."""
    changes: list[tuple[Key, TransferState]] = []
    for content_hash in sorted(missing):
        for file_id in asked.get(content_hash, []):
            state = rows.get((file_id, "upload"))
            if state is not None and state.status == "done" and state.content_hash == content_hash:
                queued = TransferState("queued", content_hash, 0, "the server lost its copy")
                changes.append(((file_id, "upload"), queued))
    return changes


async def _online(executor: TransferExecutor) -> None:
    while True:
        changed = executor.changed.event
        if executor.online:
            return
        await changed.wait()


async def repair_lost_uploads(
    core: ClientCore,
    states: TransferStateStore,
    blobs: BlobStore,
    wire: BlobClient,
    executor: TransferExecutor,
    options: FileOptions,
) -> None:
    """Asks the server which uploaded blobs it lacks, and queues them again (see the
    module): now, then every ``options.check_lost_every`` seconds (0: now only). Each
    question is asked until answered, or refused for good; a failed attempt is asked
    again after the retry policy's backoff, once the client is connected. Never raises:
    a failure here costs the repair, never the client."""
    while True:
        try:
            await _repair(core, states, blobs, wire, executor, options.retry)
        except Exception as exc:
            logger.exception("checking the uploads the server may have lost failed")
            core.trace("files.lost_uploads_unchecked", error=repr(exc))
        if not options.check_lost_every:
            return
        await trio.sleep(options.check_lost_every)


async def _repair(
    core: ClientCore,
    states: TransferStateStore,
    blobs: BlobStore,
    wire: BlobClient,
    executor: TransferExecutor,
    retry: RetryPolicy,
) -> None:
    asked = uploads_to_check(states.rows, set(await core.run_store(blobs.hashes)))
    if not asked:
        return
    failures = 0
    while True:
        await _online(executor)
        try:
            missing = await wire.missing(sorted(asked))
            break
        except TransferFailed as exc:
            if not exc.retryable:
                core.trace("files.lost_uploads_unchecked", error=str(exc))
                return
            failures += 1
            await trio.sleep(retry.delay(failures, core.rng.random()))
    changes = uploads_to_repeat(states.rows, asked, missing)
    # Only where the row still names the contents decided on: a save's new contents, or
    # a delete's forget, written meanwhile, stand.
    await core.run_store(
        states.set_if_contents_unchanged, [(key, state, state) for key, state in changes]
    )
    core.trace("files.lost_uploads_checked", asked=len(asked), missing=len(missing))
    core.notify("files.checked", blobs=len(asked), missing=len(missing))
    for (file_id, direction), state in changes:
        if states.get(file_id, direction) != state:
            continue  # not written (see above)
        core.notify("recovery", what="lost-on-server", file_id=file_id, hash=state.content_hash)
        executor.enqueue("upload", file_id)
