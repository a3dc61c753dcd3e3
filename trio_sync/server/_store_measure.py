"""How many bytes a store's blobs take, without listing the store on every upload.

Weighing an upload against the quota needs the bytes of every blob the store holds.
Listing them (a ``scandir`` and a ``stat`` per blob, or a bucket listing on an object
store) is O(blobs): about 100 ms for 20,000 blobs on this project's test machine. Done
on every upload begin, under the store's begin lock, it made a burst of N uploads cost
O(N²), and a store that had been in use for a while took uploads at a few per second.

A :class:`StoreMeasure` keeps the total of the last listing and adds what this process
publishes after it. It is trusted for ``BlobLimits.measure_max_age`` seconds, then the
store is listed again. Only a figure that lets an upload in is taken on trust: when the
trusted figure says an upload does not fit, the store is listed again before the upload
is refused (see ``server/_blobs.py``). So:

- a node alone on its blob folder weighs every upload as exactly as a listing would,
  or more (contents published twice, blobs deleted: counted until the next listing,
  which never lets in an upload that does not fit);
- nodes sharing a folder (or a bucket) see each other's blobs within ``measure_max_age``:
  until then a node may let in up to what the others stored in that window beyond the
  quota;
- a store near its quota is listed on every upload begin, as before.

The partials (unfinished uploads: few, and expired as an upload begins) are still listed
every time. Pure: the caller passes the time in and runs the listing.
"""

from __future__ import annotations

import attrs


@attrs.define
class StoreMeasure:
    """The bytes of a store's published blobs: the last listing plus what this process
    published since (see the module)."""

    #: Bytes this process published, in all (only differences of it are meaningful).
    _published: int = 0
    #: The listing's total minus ``_published`` as it stood when the listing began.
    _base: int | None = None
    #: When the last listing began (the clock the caller passes in).
    _listed_at: float = 0.0

    def blob_bytes(self, now: float, max_age: float) -> int | None:
        """The trusted figure at ``now``: None when there is none yet, or it is
        ``max_age`` seconds old or older (list the store)."""
        if self._base is None or now - self._listed_at >= max_age:
            return None
        return self._base + self._published

    def listing_begins(self) -> int:
        """A mark to hand back to :meth:`listed` with the listing's total."""
        return self._published

    def listed(self, blob_bytes: int, mark: int, began_at: float) -> None:
        """A listing that began at ``began_at`` (when :meth:`listing_begins` gave
        ``mark``) found ``blob_bytes``. What this process published while it ran is added
        on top: a blob the listing saw as well is then counted twice, which errs on the
        side of listing again, never of letting an upload in."""
        self._base = blob_bytes - mark
        self._listed_at = began_at

    def published(self, size: int) -> None:
        """This process published a blob of ``size`` bytes."""
        self._published += size
