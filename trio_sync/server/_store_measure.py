"""How many bytes a store's blobs take, without listing the store on every upload.

Weighing an upload against the quota needs the bytes of every blob the store holds.
Listing them (a ``scandir`` and a ``stat`` per blob, or a bucket listing on an object
store) is O(blobs): about 100 ms for 20,000 blobs on this project's test machine. Done
on every upload begin, under the store's begin lock, it made a burst of N uploads cost
O(N²), and a store that had been in use for a while took uploads at a few per second.

A :class:`StoreMeasure` keeps the total of the last listing and adds what this process
publishes after it. It is trusted to let an upload in for ``BlobLimits.measure_max_age``
seconds after the listing ended, and only while what this process published since (with
the upload being weighed) stays within half the room the listing left free under the
quota; then the store is listed again. Halfway through that age an upload begin starts a
listing in the background (:meth:`StoreMeasure.due`), so that a store listed in time never
makes an upload wait for its listing. When the trusted figure says an upload does not
fit, the store is listed again before the upload is refused (see ``server/_blobs.py``).
While it is trusted, every upload in progress on this node is counted at its declared
size until its session ends (its blob may be published and not yet in the figure). So:

- a node alone on its blob folder weighs every upload at least as high as a listing
  would (contents published twice, blobs deleted: counted until the next listing, which
  never lets in an upload that does not fit);
- nodes sharing a folder (or a bucket) see each other's blobs within ``measure_max_age``
  of a listing's end. Until then each node lets in on trust at most half the room its
  listing left free: together they go over the quota by at most that much per node
  (what each let in while the others filled the room by their own listings);
- a store near its quota is listed on every upload begin, as before.

The partials (unfinished uploads: few, and expired as an upload begins) are still listed
every time. Pure: the caller passes the time and the quota in and runs the listing.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Listing:
    """A listing under way: hand it back to :meth:`StoreMeasure.listed`."""

    #: Listings are numbered as they begin: an older one never replaces a newer one.
    number: int
    #: ``StoreMeasure._published`` when it began.
    mark: int


@attrs.define
class StoreMeasure:
    """The bytes of a store's published blobs: the last listing plus what this process
    published since (see the module)."""

    #: Bytes this process published, in all (only differences of it are meaningful).
    _published: int = 0
    #: What the last listing found, and how it began.
    _listed: int | None = None
    _listing: Listing = Listing(0, 0)
    #: When the last listing ended (the clock the caller passes in).
    _listed_at: float = 0.0
    #: Listings begun so far.
    _begun: int = 0

    def blob_bytes(self, now: float, max_age: float, quota: int, needed: int) -> int | None:
        """The trusted figure at ``now``, to weigh an upload of ``needed`` bytes: None
        (list the store) when there is none yet, when the listing ended ``max_age``
        seconds ago or more, or when what this process published since, with ``needed``,
        would pass half the room the listing left free under ``quota``."""
        if self._listed is None or now - self._listed_at >= max_age:
            return None
        since = self._published - self._listing.mark
        if 2 * (since + needed) > quota - self._listed:
            return None
        return self._listed + since

    def due(self, now: float, max_age: float) -> bool:
        """The trusted figure is past half its age: time to list again in the background,
        so that no upload waits for the listing."""
        return self._listed is not None and now - self._listed_at >= max_age / 2

    def listing_begins(self) -> Listing:
        """A listing begins: hand the result to :meth:`listed` with its total."""
        self._begun += 1
        return Listing(self._begun, self._published)

    def listed(self, blob_bytes: int, listing: Listing, ended_at: float) -> None:
        """``listing`` found ``blob_bytes`` and ended at ``ended_at``. What this process
        published while it ran is added on top: a blob the listing saw as well is then
        counted twice, which errs on the side of listing again, never of letting an
        upload in. A listing that began before the one the figure has is dropped."""
        if listing.number < self._listing.number:
            return
        self._listed = blob_bytes
        self._listing = listing
        self._listed_at = ended_at

    def published(self, size: int) -> None:
        """This process published a blob of ``size`` bytes."""
        self._published += size

    def forget(self) -> None:
        """The store changed in a way not counted (a publish whose last step failed):
        the next weighing lists it."""
        self._listed = None
