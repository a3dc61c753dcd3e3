"""Uploads the server lost: ask which ones, and upload them again.

A blob can vanish from the server after it was uploaded: its disk rotted it and the
server set it aside (``server/_blob_upkeep.py``), or its operator restored an older
backup. Every other client then waits for contents only those that hold them can give
back. So when the files open (beside the recovery of stale transfers), and again every
``FileOptions.check_lost_every`` seconds (5 minutes; not on a reconnect), the client asks
the server, on one blob connection and in ``blob_check`` messages of up to 1,000 hashes,
which of the blobs it holds for its files (uploaded or downloaded: transfer ``done``,
contents still held here) it lacks, and uploads those (again). A client that stays open
for days thus heals a rotten copy within minutes, not at its next start, and so does any
client that downloaded the contents while their uploader is gone.

What to ask and what to queue again are pure (:func:`uploads_to_check`,
:func:`uploads_to_repeat`); :func:`repair_lost_uploads` waits for the connection, asks
(again after a backoff when the question fails) and queues.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import attrs
import trio

from .._errors import StoreError
from ..client._core import ClientCore
from ._blobs import BlobStore
from ._bulk import bulk_runner
from ._chunks import hash_stored
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
) -> dict[str, list[Key]]:
    """The contents worth asking the server about: held here, and uploaded by this client
    (upload done) or downloaded by it (download done): if the server lost them, this
    client can give them back. Returns the rows that name them, by content hash."""
    found: dict[str, list[Key]] = {}
    for key, state in sorted(rows.items()):
        if state.status == "done" and state.content_hash in held:
            found.setdefault(state.content_hash, []).append(key)
    return found


@attrs.frozen
class Repair:
    """An upload to queue again: ``state`` written at ``key`` where the row still names
    what ``seen`` named, and, for contents this client only downloaded, where the
    download row (``provided``) still names them."""

    key: Key
    state: TransferState
    seen: TransferState | None
    provided: tuple[Key, str] | None = None


def _done_for(state: TransferState | None, content_hash: str) -> bool:
    return state is not None and state.status == "done" and state.content_hash == content_hash


def uploads_to_repeat(
    rows: Mapping[Key, TransferState], asked: Mapping[str, list[Key]], missing: Collection[str]
) -> list[Repair]:
    """The uploads to queue, one per file, for the contents asked about that the server
    lacks, if the row asked about still names them (a file deleted or changed meanwhile
    is not). Contents this client only downloaded are uploaded from here too, unless an
    upload of other contents of that file is still to go here (a save's)."""
    repairs: dict[str, Repair] = {}
    for content_hash in sorted(missing):
        for file_id, direction in asked.get(content_hash, []):
            state = rows.get((file_id, direction))
            if file_id in repairs or not _done_for(state, content_hash):
                continue
            upload = rows.get((file_id, "upload"))
            queued = TransferState("queued", content_hash, 0, "the server lost its copy")
            if direction == "upload":
                repairs[file_id] = Repair((file_id, "upload"), queued, upload)
            elif upload is None or (
                upload.status == "done" and upload.content_hash != content_hash
            ):
                provided: tuple[Key, str] = ((file_id, "download"), content_hash)
                repairs[file_id] = Repair((file_id, "upload"), queued, upload, provided)
    return list(repairs.values())


def sound_copies(blobs: BlobStore, hashes: Collection[str]) -> set[str]:
    """Of ``hashes``, those whose local copy is held, can be read, and still hashes to
    its name (run in a worker thread: each is read whole). A copy that cannot be read is
    left out, not raised: the others, and this client's own lost uploads, still go."""
    sound = set()
    for content_hash in hashes:
        try:
            size = blobs.size(content_hash)
            hashed = None if size is None else hash_stored(blobs, content_hash, size)
        except (StoreError, OSError):
            continue
        if size is not None and hashed == (content_hash, size):
            sound.add(content_hash)
    return sound


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
    repairs = uploads_to_repeat(states.rows, asked, missing)
    # Contents only downloaded are given back only from a sound copy: a rotten one
    # would fail its upload for good, and leave this client "stuck" for a file it never
    # saved (its own read() fetches it again once a sound copy is back on the server).
    given_back = {r.state.content_hash for r in repairs if r.provided is not None}
    sound = await bulk_runner(core.run_store)(sound_copies, blobs, sorted(given_back))
    repairs = [r for r in repairs if r.provided is None or r.state.content_hash in sound]
    # Only where the rows still name the contents decided on: a save's new contents, a
    # delete's forget, or a download of new contents, written meanwhile, stand.
    provided = {r.key: r.provided for r in repairs if r.provided is not None}
    changes = [(r.key, r.state, r.seen) for r in repairs]
    await core.run_store(states.set_if_contents_unchanged, changes, provided)
    core.trace("files.lost_uploads_checked", asked=len(asked), missing=len(missing))
    core.notify("files.checked", blobs=len(asked), missing=len(missing))
    for repair in repairs:
        file_id, _ = repair.key
        if states.get(file_id, "upload") != repair.state:
            continue  # not written (see above)
        what = repair.state.content_hash
        core.notify("recovery", what="lost-on-server", file_id=file_id, hash=what)
        executor.enqueue("upload", file_id)
