"""Reading and writing one chunk of a blob, digest included, in one call.

Both ends of a transfer run these through their store runner: in a worker thread in
production, inline in the simulator. A chunk's SHA-256 and its file I/O then cost one
thread hop together, and neither runs on the event loop (hashing 1 MiB takes a few
milliseconds, which the event sync's connection must not wait for; ``hashlib`` and file
I/O release the GIL, so the loop goes on meanwhile).
"""

from __future__ import annotations

import hashlib

from .._errors import ProtocolError, StoreError
from ..protocol._blob_messages import BlobChunk
from ._blobs import BlobStore


class CorruptChunk(ProtocolError):
    """A chunk's bytes do not match its digest (damaged on the way, or a hostile peer)."""


def make_chunk(content_hash: str, offset: int, data: bytes) -> BlobChunk:
    """A chunk of ``content_hash`` at ``offset`` holding ``data``, with its digest."""
    return BlobChunk(
        hash=content_hash, offset=offset, data=data, digest=hashlib.sha256(data).hexdigest()
    )


def read_chunk(store: BlobStore, content_hash: str, offset: int, length: int) -> BlobChunk:
    """Reads up to ``length`` bytes of a stored blob at ``offset`` as a chunk.

    Raises:
        KeyError: The blob is not stored.
        StoreError: It cannot be read, or it ends before ``offset`` + 1.
    """
    data = store.read(content_hash, offset, length)
    if not data:
        raise StoreError(f"blob {content_hash} ends before offset {offset}")
    return make_chunk(content_hash, offset, data)


def append_chunk(store: BlobStore, chunk: BlobChunk) -> None:
    """Checks ``chunk`` against its digest, then adds it to the partial of its blob.

    Raises:
        CorruptChunk: The bytes do not match the digest (nothing was written).
        ValueError: The chunk does not start where the partial ends.
        StoreFull, StoreError: The write failed (the partial keeps what it had).
    """
    if hashlib.sha256(chunk.data).hexdigest() != chunk.digest:
        raise CorruptChunk(f"a blob chunk at offset {chunk.offset} does not match its digest")
    store.append_partial(chunk.hash, chunk.offset, chunk.data)
