"""The server's blob garbage: blobs no live file of their store refers to any more.

Clients delete their own copies of contents no live file needs; the server kept every
blob it ever received, so a store whose files were deleted or replaced stayed as full as
it was, and once over its quota it refused every new upload for good.

The log says what is live: the store's ``file.created``/``updated``/``deleted`` events,
folded as clients fold them (:class:`~trio_sync.files.FileTable`). A blob is garbage when
no live file names it, no upload of it is being received, nobody asked to upload it
lately, and it was stored more than ``BlobLimits.unreferenced_min_age`` ago. The age is
there because contents travel beside their event, not inside it: an upload may finish
before its event reaches the log (or while its client is offline between the two). A
client whose event comes later than that gets the blob back from its uploader's repair at
its next open (``repair_lost_uploads``); until then its downloads report it missing.

Collection runs where room is wanted: when an upload would go over the quota, before it
is refused (under the store's ``begin_lock``, with ``StoreUpkeep.collecting`` set: an
upload beginning meanwhile waits for it before it is told "stored already"). It reads the
whole log of the store, which is the price of never keeping a second index of files on
the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from .._store_runner import StoreRunner
from ..files._blobs import ServerBlobStore, StoreUsage
from ..files._model import FileTable
from ..protocol._blob_messages import UploadBegin
from ._blob_backends import BlobLimits
from ._blob_upkeep import StoreUpkeep, quota_refusal, weigh

if TYPE_CHECKING:
    from ._hub import Hub

logger = logging.getLogger("trio_sync.server")

#: The least seconds between two collections of one store (a collection reads its log).
COLLECT_INTERVAL = 5.0
#: Events read from the log at a time while folding a store's files.
_PAGE = 2000


async def live_contents(hub: Hub, store_id: str) -> set[str]:
    """The hashes the live files of ``store_id`` refer to, folded from its log.

    Raises:
        StoreError: The log cannot be read.
    """
    table = FileTable()
    after = 0
    while True:
        events = await hub.run_store(partial(hub.db.read, after, _PAGE, store_id=store_id))
        if not events:
            return table.live_hashes()
        table.apply_all(events)
        after = events[-1].seq or after


@attrs.frozen
class Collected:
    """What a collection did: the blobs it deleted (hash, size), and the bytes of the
    unreferenced blobs it kept only because they are younger than the minimum age (the
    room that comes free later)."""

    deleted: list[tuple[str, int]]
    waiting: int
    #: False when the last collection's result was taken again (it ran moments ago on
    #: the same log): nothing was deleted now, and no time passed folding the log.
    folded: bool = True


async def collect(
    hub: Hub,
    store_id: str,
    store: ServerBlobStore,
    care: StoreUpkeep,
    *,
    min_age: float,
    run: StoreRunner,
) -> Collected:
    """Deletes the blobs of ``store_id`` that are garbage (see the module), under
    ``care.begin_lock``. ``run`` runs the blob store's work.

    Raises:
        StoreError: The log or the blob store cannot be read.
    """
    now = trio.current_time()
    heads = await hub.run_store(hub.db.heads, [store_id])
    head = heads.get(store_id, 0)
    last = care.last_collection
    if last is not None and last[1] == head and now - last[0] < COLLECT_INTERVAL:
        # Uploads that do not fit, one after another (or a client asking again and
        # again), fold the same log at most this often; a new event (a file deleted,
        # say) is looked at at once.
        return Collected([], last[2].waiting, folded=False)
    care.collecting = True
    try:
        live = await live_contents(hub, store_id)
        in_use = set(care.sizes) | care.asked.since(min_age)
        deleted: list[tuple[str, int]] = await run(
            store.delete_unreferenced, frozenset(live | in_use), min_age
        )
        # What is left unreferenced was kept for its age alone (or is being received).
        waiting: int = await run(_bytes_of_others, store, frozenset(live | set(care.sizes)))
    finally:
        care.collecting = False
    if deleted:
        logger.info(
            "store %r: deleted %d blob(s) no live file refers to (%d bytes)",
            store_id,
            len(deleted),
            sum(size for _, size in deleted),
        )
    collected = Collected(deleted, waiting)
    care.last_collection = (now, head, collected)
    return collected


async def problem_after_collecting(
    hub: Hub,
    store_id: str,
    store: ServerBlobStore,
    care: StoreUpkeep,
    begin: UploadBegin,
    limits: BlobLimits,
    run: StoreRunner,
    listed: tuple[StoreUsage, Mapping[str, int]],
) -> tuple[str | None, bool]:
    """For an upload that does not fit by ``listed`` (the usage and reservations of a
    listing just made, under the same begin lock): collects the garbage, and says again
    why it does not fit (None: it fits now), and whether it will once the garbage kept
    for its age goes (then the refusal says "try later", and the client retries without
    giving up). The store is listed again unless the collection was the last one's result
    taken again (the same log, moments ago): then ``listed`` is still what it was.

    Raises:
        StoreError: The log or the blob store cannot be read.
    """
    min_age = limits.unreferenced_min_age
    collected = await collect(hub, store_id, store, care, min_age=min_age, run=run)
    usage, reserved = listed
    if collected.folded:
        # Folding the log takes a while: room may have come free meanwhile (an upload
        # given up, another node's collection), besides what this one deleted.
        weighed = await weigh(store, care, limits, run, list_blobs=True, needed=begin.size)
        usage, reserved = weighed.usage, weighed.reserved
    return quota_refusal(
        usage,
        reserved,
        begin.hash,
        begin.size,
        limits.max_store_bytes,
        waiting=collected.waiting,
        min_age=min_age,
    )


def _bytes_of_others(store: ServerBlobStore, keep: frozenset[str]) -> int:
    total = 0
    for content_hash in store.hashes():
        fingerprint = None if content_hash in keep else store.fingerprint(content_hash)
        total += 0 if fingerprint is None else fingerprint[0]
    return total
