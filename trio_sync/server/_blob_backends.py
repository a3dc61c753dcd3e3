"""Where a server keeps blobs (a backend: one blob store per sync store) and the limits
of a blob connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import attrs

from .._checks import finite_non_negative, positive_int
from .._errors import StoreError
from ..files._blobs import FileBlobStore, ServerBlobStore
from ..files._memory_blobs import MemoryBlobStore


@attrs.frozen
class BlobLimits:
    """What a blob connection may do.

    Attributes:
        chunk_bytes: The largest chunk, in bytes (announced: clients send this size).
        max_blob_bytes: The largest file.
        download_wait: The longest a download of a blob whose upload this node is
            receiving waits for that upload to end (seconds; a client asks for at most
            its own ``wait``).
        max_store_bytes: The quota of each store: its blobs, its partial uploads and the
            rest of the uploads in progress may hold at most this many bytes. An upload
            that would go over it is refused for good (the client shows it as stuck).
        partial_max_age: Seconds after which an upload's partial that nothing wrote to
            is abandoned: deleted (when the next upload to its store begins), so that it
            stops counting against the quota. Its upload, if it comes back, starts over.
        unreferenced_min_age: Seconds a stored blob no live file refers to is kept
            (its event may still be on its way) before an upload that needs the room
            deletes it (see ``server/_blob_garbage.py``).
        measure_max_age: Seconds the bytes of a store's blobs, as last listed plus what
            this node stored since, are trusted to let an upload in, before the store is
            listed again (``server/_store_measure.py``). A refusal always lists it. Nodes
            sharing a blob folder see each other's new blobs within this; 0 lists the
            store on every upload begin (O(blobs) each).
    """

    chunk_bytes: int = attrs.field(default=256 * 1024, validator=positive_int)
    max_blob_bytes: int = attrs.field(default=1 << 30, validator=positive_int)
    download_wait: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    max_store_bytes: int = attrs.field(default=10 * 2**30, validator=positive_int)
    partial_max_age: float = attrs.field(default=24 * 3600.0, validator=attrs.validators.gt(0))
    unreferenced_min_age: float = attrs.field(default=3600.0, validator=attrs.validators.ge(0))
    measure_max_age: float = attrs.field(default=5.0, validator=finite_non_negative)

    def __attrs_post_init__(self) -> None:
        # A chunk's frame (its bytes and a 73-byte header) must fit the default frame limit.
        if self.chunk_bytes > 2 * 1024 * 1024:
            raise ValueError("chunk_bytes may be at most 2 MiB")


class BlobBackend(Protocol):
    """Where a server keeps blobs: one blob store per sync store."""

    def store(self, store_id: str) -> ServerBlobStore:
        """The blob store of ``store_id`` (created on first use)."""
        ...


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder this process writes in; None if it
    can. Nothing is made: the first upload makes it."""
    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.exists(path):
        return f"{path!r} is a broken symbolic link"
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path!r} exists and is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"folder {path!r} cannot be written"
        return None
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        if os.path.lexists(parent):
            return f"{path!r} cannot be made: {parent!r} is a broken symbolic link"
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{path!r} cannot be made: {parent!r} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path!r} cannot be made: folder {parent!r} cannot be written"
    return None


class FileBlobBackend:
    """Blobs in ``root/<store_id>/`` (a directory per sync store).

    Raises (from the constructor):
        StoreError: ``root`` cannot be a folder this process writes in (a file, a broken
            link, under a file, not writable): said at start, not at each upload.
    """

    def __init__(self, root: str | Path) -> None:
        problem = folder_problem(root)
        if problem is not None:
            raise StoreError(f"file contents cannot be kept there: {problem}")
        self.root = Path(root)
        self._stores: dict[str, FileBlobStore] = {}

    def store(self, store_id: str) -> ServerBlobStore:
        found = self._stores.get(store_id)
        if found is None:
            # store_id is checked (letters, digits, _ . -, never "." or ".."): a safe name.
            found = self._stores[store_id] = FileBlobStore(self.root / store_id)
        return found


class MemoryBlobBackend:
    """Blobs in memory (the simulator): they survive a server restart, as a disk would."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryBlobStore] = {}

    def store(self, store_id: str) -> ServerBlobStore:
        return self.stores.setdefault(store_id, MemoryBlobStore())
