"""Reading and writing one chunk of a blob, digest included, in one call.

Both ends of a transfer run these through their store runner: in a worker thread in
production, inline in the simulator. A chunk's SHA-256 and its file I/O then cost one
thread hop together, and neither runs on the event loop (hashing 1 MiB takes a few
milliseconds, which the event sync's connection must not wait for; ``hashlib`` and file
I/O release the GIL, so the loop goes on meanwhile).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from .._errors import ProtocolError, StoreError
from ..protocol._blob_messages import BlobChunk
from ._blobs import BlobStore
from ._source import COPY_BLOCK


class CorruptChunk(ProtocolError):
    """A chunk's bytes do not match its digest (damaged on the way, or a hostile peer)."""


def make_chunk(content_hash: str, offset: int, data: bytes) -> BlobChunk:
    """A chunk of ``content_hash`` at ``offset`` holding ``data``, with its digest."""
    return BlobChunk(
        hash=content_hash, offset=offset, data=data, digest=hashlib.sha256(data).hexdigest()
    )


class Hasher(Protocol):
    """A running SHA-256 (``hashlib.sha256()``)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def read_chunk(
    store: BlobStore, content_hash: str, offset: int, length: int, hasher: Hasher | None = None
) -> BlobChunk:
    """Reads up to ``length`` bytes of a stored blob at ``offset`` as a chunk (and adds
    them to ``hasher``: a server hashes a blob it serves from offset 0 as it reads it).

    Raises:
        KeyError: The blob is not stored.
        StoreError: It cannot be read, or it ends before ``offset`` + 1.
    """
    data = store.read(content_hash, offset, length)
    if not data:
        raise StoreError(f"blob {content_hash} ends before offset {offset}")
    if hasher is not None:
        hasher.update(data)
    return make_chunk(content_hash, offset, data)


def new_hasher(offset: int) -> Hasher | None:
    """A running hash of a download's partial, or None when it resumes at ``offset`` > 0
    (the bytes before were not seen: the partial is then read back when it is finished).
    Hashed as the chunks are appended, a blob is checked without a second pass over it.

    Only a client uses it: its partials are written by its own transfers alone. A server
    reads an upload back before publishing it (see ``server/_blobs.py``)."""
    return hashlib.sha256() if offset == 0 else None


def append_chunk(store: BlobStore, chunk: BlobChunk, hasher: Hasher | None = None) -> None:
    """Checks ``chunk`` against its digest, then adds it to the partial of its blob (and,
    once written, to ``hasher``).

    Raises:
        CorruptChunk: The bytes do not match the digest (nothing was written).
        ValueError: The chunk does not start where the partial ends.
        StoreFull, StoreError: The write failed (the partial keeps what it had).
    """
    if hashlib.sha256(chunk.data).hexdigest() != chunk.digest:
        raise CorruptChunk(f"a blob chunk at offset {chunk.offset} does not match its digest")
    store.append_partial(chunk.hash, chunk.offset, chunk.data)
    if hasher is not None:
        hasher.update(chunk.data)


def finish(store: BlobStore, content_hash: str, hasher: Hasher | None) -> bool:
    """Publishes the partial of ``content_hash`` if its bytes match (see
    :meth:`BlobStore.finish_partial`), with the running hash when there is one.

    Raises:
        StoreFull, StoreError: The write failed.
    """
    digest = None if hasher is None else hasher.hexdigest()
    return store.finish_partial(content_hash, digest=digest)


def hash_stored(store: BlobStore, content_hash: str, size: int) -> tuple[str, int] | None:
    """The SHA-256 of the first ``size`` bytes of a stored blob, read in blocks, and how
    many bytes there were (fewer when it is shorter than ``size``); None when it is not
    stored (or went meanwhile).

    Raises:
        StoreError: It cannot be read.
    """
    hasher = hashlib.sha256()
    offset = 0
    try:
        while offset < size:
            block = store.read(content_hash, offset, min(COPY_BLOCK, size - offset))
            if not block:
                break  # shorter than ``size``
            hasher.update(block)
            offset += len(block)
    except KeyError:
        return None
    return hasher.hexdigest(), offset
