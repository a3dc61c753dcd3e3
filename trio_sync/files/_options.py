"""How a client syncs files (:class:`FileOptions`), and where it keeps them."""

from __future__ import annotations

import attrs

from .._checks import finite_non_negative, finite_positive, positive_int
from ..store._sqlite import is_memory
from ._blobs import BlobStore, FileBlobStore
from ._memory_blobs import MemoryBlobStore
from ._pacing import PacingPolicy
from ._queue import RetryPolicy


@attrs.frozen
class FileOptions:
    """How a client syncs files.

    Attributes:
        uploads: Uploads at once.
        downloads: Downloads at once.
        retry: Backoff between attempts of a transfer, and how many attempts.
        transfer_timeout: Seconds to wait for any answer of the server in a transfer.
        progress_interval: Seconds between progress notifications of one transfer.
        keep_connection: Seconds an idle transfer worker keeps its blob connection for
            the next transfer (files saved one after another reuse it); 0 closes it as
            soon as there is nothing to do. Well under the server's ``idle_timeout``.
        pacing: How transfers yield to the event sync while it has work in flight (see
            ``_pacing.py``); None never yields.
        blob_store: Where contents are kept (default: the directory ``<store>.blobs``,
            or memory for an in-memory store).
        state_path: The SQLite file of the local transfer state (default
            ``<store>.files``).
        check_lost_every: Seconds between two questions to the server about the
            contents held here (uploaded or downloaded) it may have lost since (a rotten
            copy it set aside: see ``_repair.py``); the first when the files open. 0:
            that first one only.
        retry_given_up_every: Seconds between two new tries of the downloads that gave
            up here (out of retries: a disk that was full may have room again); 0: only
            when the application reads the file, or the client opens again.
    """

    uploads: int = attrs.field(default=2, validator=positive_int)
    downloads: int = attrs.field(default=2, validator=positive_int)
    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy, validator=attrs.validators.instance_of(RetryPolicy)
    )
    transfer_timeout: float = attrs.field(default=30.0, validator=finite_positive)
    progress_interval: float = attrs.field(default=0.25, validator=finite_non_negative)
    keep_connection: float = attrs.field(default=2.0, validator=finite_non_negative)
    pacing: PacingPolicy | None = attrs.field(
        factory=PacingPolicy,
        validator=attrs.validators.optional(attrs.validators.instance_of(PacingPolicy)),
    )
    blob_store: BlobStore | None = None
    state_path: str | None = None
    check_lost_every: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    retry_given_up_every: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))


def default_places(store_path: str, options: FileOptions) -> tuple[BlobStore, str]:
    """Where a client's blobs and transfer state live: as ``options`` say, else next to
    its store (in memory for an in-memory store)."""
    blobs = options.blob_store
    state = options.state_path
    if is_memory(store_path):
        return blobs or MemoryBlobStore(), state or ":memory:"
    return blobs or FileBlobStore(f"{store_path}.blobs"), state or f"{store_path}.files"
