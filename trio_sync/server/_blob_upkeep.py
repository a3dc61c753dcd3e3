"""Keeping a store's blobs within bounds and sound: what this node is receiving, the quota,
the expiry of abandoned upload partials, and the blobs that no longer match their hash.

One :class:`StoreUpkeep` per blob store and process (:func:`upkeep`), shared by every blob
session of the node:

- the uploads being received, with their declared sizes: a download of a blob on its way
  waits for it, and the quota counts an upload in progress at its whole declared size
  (not only the bytes that arrived so far), so that two uploads that begin together
  cannot both fit in the room one of them has;
- ``begin_lock``: the decision to take an upload (measure the store, compare with the
  quota, reserve) is made by one session at a time;
- ``measure``: the bytes of the store's blobs, listed at most every
  ``BlobLimits.measure_max_age`` seconds, not on every upload begin
  (``_store_measure.py``).

The quota decision itself is pure (:func:`quota_problem`). Partials no upload wrote to for
``BlobLimits.partial_max_age`` are deleted as an upload begins, just before the store is
measured (:func:`sweep_and_measure`): an abandoned upload never counts against the quota
for longer than that, and no task runs in the background for it.

A stored blob can rot (a bad disk, a stray write, a restore gone wrong). Every blob is
hashed before it is published, but nothing checked it afterwards: a re-upload of the same
contents was answered "already stored", and every download was refused by its client, for
ever. Now :func:`check_blob` hashes a stored blob (streaming, in a worker thread) and moves
it aside when it does not match (``FileBlobStore``: ``corrupt/<hash>.<UTC time>``), so that
it reads as missing and the next upload of those contents stores them again. It runs when
an upload begins for a blob the store holds (once per process per blob version:
:meth:`StoreUpkeep.is_verified`), and when a client reports a corrupt download. A download
served from offset 0 is hashed as it is read, which verifies the blob for free, or moves it
aside at once.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import trio

from .._broadcast import Broadcast
from .._store_runner import StoreRunner
from ..files._blobs import BlobStore, Fingerprint, ServerBlobStore, StoreUsage
from ..files._chunks import hash_stored
from ._blob_backends import BlobLimits
from ._store_measure import StoreMeasure

logger = logging.getLogger("trio_sync.server")

#: How many "verified" facts a store keeps (the least recently used go first).
VERIFIED_FACTS = 10_000
#: What :func:`check_blob` found.
Verdict = Literal["sound", "missing", "quarantined", "replaced"]


class RecentlyAsked:
    """The blobs clients began to upload lately, by when: an upload answered "stored
    already" is not received again, so its blob must outlive the check that answered it
    until its event is in the log."""

    def __init__(self) -> None:
        self._when: dict[str, float] = {}

    def note(self, content_hash: str) -> None:
        self._when[content_hash] = trio.current_time()

    def since(self, seconds: float) -> set[str]:
        """The blobs asked for within the last ``seconds`` (older notes are forgotten)."""
        older_than = trio.current_time() - seconds
        self._when = {h: at for h, at in self._when.items() if at >= older_than}
        return set(self._when)


class StoreUpkeep:
    """What the sessions of one node share about one blob store (see the module)."""

    def __init__(self) -> None:
        #: The Trio run this state belongs to.
        self.run = trio.lowlevel.current_trio_token()
        #: Sessions receiving each blob's upload right now.
        self.receiving: Counter[str] = Counter()
        #: The declared size of each blob being received.
        self.sizes: dict[str, int] = {}
        #: Notified when an upload ends, published or not.
        self.changed = Broadcast()
        #: Held while a session decides whether an upload fits (and reserves it).
        self.begin_lock = trio.Lock()
        #: Blobs whose upload began lately (kept from garbage collection).
        self.asked = RecentlyAsked()
        #: True while a garbage collection runs (under ``begin_lock``).
        self.collecting = False
        #: When the last collection ran, at which head of the store's log, and what it
        #: found (see _blob_garbage.py).
        self.last_collection: tuple[float, int, Any] | None = None
        #: The bytes of the store's blobs, without listing them on every upload begin.
        self.measure = StoreMeasure()
        #: True while a background listing runs (see :func:`weigh`); ``relisted`` is
        #: notified when one ends.
        self.relisting = False
        self.relisted = Broadcast()
        #: Blob versions found sound, with when (``trio.current_time()``).
        self._verified: OrderedDict[tuple[str, Fingerprint], float] = OrderedDict()

    def is_verified(self, content_hash: str, fingerprint: Fingerprint) -> bool:
        """True when this version of the blob (same size and write stamp) was found
        sound by this process."""
        key = (content_hash, fingerprint)
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        return False

    def verified_at(self, content_hash: str, fingerprint: Fingerprint) -> float | None:
        """When this version of the blob was last found sound (None: never, here)."""
        return self._verified.get((content_hash, fingerprint))

    def mark_verified(self, content_hash: str, fingerprint: Fingerprint, now: float) -> None:
        """This version of the blob was hashed and matches (published, served whole, or
        checked)."""
        key = (content_hash, fingerprint)
        self._verified[key] = now
        self._verified.move_to_end(key)
        while len(self._verified) > VERIFIED_FACTS:
            self._verified.popitem(last=False)

    def start_upload(self, content_hash: str, size: int) -> None:
        """Counts an upload this node now receives (reserving ``size`` bytes)."""
        self.receiving[content_hash] += 1
        self.sizes[content_hash] = size

    def end_upload(self, content_hash: str) -> None:
        """The upload ended (published or given up): waiting downloads look again."""
        self.receiving[content_hash] -= 1
        if self.receiving[content_hash] <= 0:
            del self.receiving[content_hash]
            self.sizes.pop(content_hash, None)
        self.changed.notify()


# Keyed by the store object: every session of a node (and nodes in one process sharing a
# backend, as tests do) sees the same state; a store that goes away takes its entry.
_UPKEEP: weakref.WeakKeyDictionary[BlobStore, StoreUpkeep] = weakref.WeakKeyDictionary()


def upkeep(store: BlobStore) -> StoreUpkeep:
    """The shared state of ``store`` in this process and Trio run (created on first
    use). A store object that outlives a run (a backend reused by tests or an embedding
    application) starts afresh in the next: its lock, its times and its uploads belonged
    to the old run's clock and tasks."""
    run = trio.lowlevel.current_trio_token()
    found = _UPKEEP.get(store)
    if found is None or found.run is not run:
        found = _UPKEEP[store] = StoreUpkeep()
    return found


def sweep_and_measure(
    store: ServerBlobStore,
    max_age: float,
    receiving: Mapping[str, int],
    blob_bytes: int | None = None,
) -> tuple[list[str], StoreUsage, dict[str, int]]:
    """Deletes the partials not written for ``max_age`` seconds (but those of the uploads
    in progress here, ``receiving``: their declared sizes), then measures the store: one
    worker-thread hop. Returns the partials deleted, the usage, and what the uploads in
    progress still reserve.

    ``blob_bytes``: the published blobs' bytes when known (see ``_store_measure.py``):
    then only the partials are listed, and every upload in progress reserves its size
    (its blob may be published already and not yet in the figure). Else the store is
    listed, and an upload whose blob is published already reserves nothing (it is in the
    listing; counting it again refused uploads that fit). Which ones are published is
    asked before the listing: one published in between is counted twice, never missed.

    Raises:
        StoreError: The store cannot be listed.
    """
    expired = store.expire_partials(max_age, frozenset(receiving))
    if blob_bytes is not None:
        return expired, StoreUsage(blob_bytes, store.partials()), dict(receiving)
    reserved = {blob: size for blob, size in receiving.items() if not store.has(blob)}
    return expired, store.usage(), reserved


@attrs.frozen
class Weighed:
    """What :func:`weigh` found.

    Attributes:
        expired: The abandoned partials it deleted.
        usage: What the store holds.
        reserved: What the uploads this node is receiving still reserve.
        trusted: The blobs' bytes are the trusted figure, not a listing's: a refusal
            must weigh again with ``list_blobs=True``.
    """

    expired: list[str]
    usage: StoreUsage
    reserved: dict[str, int]
    trusted: bool


async def weigh(
    store: ServerBlobStore,
    care: StoreUpkeep,
    limits: BlobLimits,
    run: StoreRunner,
    *,
    list_blobs: bool,
    needed: int,
    background: bool = True,
) -> Weighed:
    """Expires the abandoned partials and measures the store (under ``care.begin_lock``),
    to weigh an upload of ``needed`` bytes: its blobs from the trusted figure while there
    is one (``list_blobs=False``), else from a listing, which becomes the new trusted
    figure. ``background``: a figure past half its age may be renewed by a listing in the
    background (not while the server shuts down: a listing cannot be cancelled).

    Raises:
        StoreError: The store cannot be listed.
    """
    measure = care.measure
    known = None
    if not list_blobs:
        now = trio.current_time()
        known = measure.blob_bytes(now, limits.measure_max_age, limits.max_store_bytes, needed)
        if known is None and care.relisting:
            # The figure expired while a background listing runs: wait for it rather
            # than list the store a second time beside it.
            await care.relisted.event.wait()
            now = trio.current_time()
            known = measure.blob_bytes(now, limits.measure_max_age, limits.max_store_bytes, needed)
        if (
            known is not None
            and background
            and not _BACKGROUND
            and measure.due(now, limits.measure_max_age)
        ):
            care.relisting = True
            _BACKGROUND.add(care)
            trio.lowlevel.spawn_system_task(_relist, store, care, run, name="blob store listing")
    listing = measure.listing_begins()
    expired, usage, reserved = await run(
        sweep_and_measure, store, limits.partial_max_age, dict(care.sizes), known
    )
    if known is None:
        measure.listed(usage.blob_bytes, listing, trio.current_time())
    return Weighed(expired, usage, reserved, trusted=known is not None)


#: The stores of this process whose background listing runs (one at a time: listings
#: share the bulk threads with every transfer's chunks).
_BACKGROUND: set[StoreUpkeep] = set()


async def _relist(store: ServerBlobStore, care: StoreUpkeep, run: StoreRunner) -> None:
    """Lists the store's blobs for a fresh trusted figure, in the background (outside
    the begin lock: no upload waits for it). A failure leaves the figure to age: the
    next upload begin after that lists in the foreground, and reports the error."""
    measure = care.measure
    try:
        listing = measure.listing_begins()
        usage = await run(store.usage)
        measure.listed(usage.blob_bytes, listing, trio.current_time())
    except Exception as exc:  # a system task must not raise: one store's listing failed
        logger.warning("listing a blob store in the background failed: %r", exc)
    finally:
        care.relisting = False
        _BACKGROUND.discard(care)
        care.relisted.notify()


def check_blob(store: ServerBlobStore, content_hash: str) -> tuple[Verdict, Fingerprint | None]:
    """Hashes the stored blob ``content_hash`` (a block at a time, never whole in memory)
    and moves it aside when it does not match. Blocking: run it in a worker thread.

    Returns the verdict and the fingerprint of the version that was read: ``"sound"``;
    ``"missing"`` (not stored, or gone meanwhile); ``"quarantined"`` (moved aside);
    ``"replaced"`` (it did not match, but it was written again while it was read: the new
    version was hashed by whoever published it, and is left alone).

    Raises:
        StoreError: It cannot be read or moved.
    """
    fingerprint = store.fingerprint(content_hash)
    if fingerprint is None:
        return "missing", None
    size = fingerprint[0]
    hashed = hash_stored(store, content_hash, size)
    if hashed is None:
        return "missing", None
    # Shorter than it was stat'ed: it does not match, whatever its hash.
    if hashed == (content_hash, size):
        return "sound", fingerprint
    if store.quarantine(content_hash, expect=fingerprint) is not None:
        return "quarantined", fingerprint
    return ("missing" if store.fingerprint(content_hash) is None else "replaced"), fingerprint


def _gib(size: int) -> str:
    """``size`` bytes for a person: in the largest unit it fills (1.50 GiB, 9.77 KiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


def quota_problem(
    usage: StoreUsage,
    reserved: Mapping[str, int],
    content_hash: str,
    size: int,
    quota: int,
) -> str | None:
    """Why an upload of ``size`` bytes of ``content_hash`` does not fit in the store's
    quota (None: it fits).

    Counted: every stored blob, every partial, the rest of each upload in progress on this
    node (``reserved``: declared sizes; their partials hold part of it already), and what
    this upload still has to send (its partial is counted already).
    """
    others = sum(
        max(0, declared - usage.partials.get(blob, 0))
        for blob, declared in reserved.items()
        if blob != content_hash
    )
    held = usage.total + others
    needed = size - min(size, usage.partials.get(content_hash, 0))
    if held + needed <= quota:
        return None
    return (
        f"the store's quota is full: {needed} more bytes would make {held + needed} "
        f"({_gib(held + needed)}), over max_store_bytes={quota} ({_gib(quota)}); "
        f"{held} bytes are held or being uploaded. Delete files, or ask the server's "
        "operator for a larger quota (--max-store-bytes)"
    )


def quota_refusal(
    usage: StoreUsage,
    reserved: Mapping[str, int],
    content_hash: str,
    size: int,
    quota: int,
    *,
    waiting: int,
    min_age: float,
) -> tuple[str | None, bool]:
    """Why an upload does not fit once the garbage was collected (None: it fits), and
    whether it will once the ``waiting`` bytes of garbage kept for their age go: then the
    reason says so, and the upload is worth trying again (not refused for good)."""
    problem = quota_problem(usage, reserved, content_hash, size, quota)
    if problem is None or not waiting:
        return problem, False
    freed = attrs.evolve(usage, blob_bytes=usage.blob_bytes - waiting)
    if quota_problem(freed, reserved, content_hash, size, quota) is not None:
        return problem, False
    return (
        f"{problem}; {waiting} bytes no file refers to any more are deleted once"
        f" {min_age:g}s old (unreferenced_min_age): trying again until then"
    ), True


def touch(
    store: ServerBlobStore, content_hash: str
) -> tuple[Fingerprint | None, Fingerprint | None]:
    """Restarts the stored blob's age (one worker-thread hop); returns its fingerprint
    before and after (after is None: the blob is gone)."""
    before = store.fingerprint(content_hash)
    store.touch(content_hash)
    return before, store.fingerprint(content_hash)
