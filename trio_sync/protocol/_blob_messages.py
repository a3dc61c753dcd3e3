"""Wire messages of a blob connection: file contents, in chunks, by content hash.

A blob connection is a second connection to the same URL (one per transfer worker), so a
large transfer never delays the event sync. It opens with :class:`BlobHello` (the same
token check as a sync connection), then carries one transfer at a time:

- upload: ``upload_begin`` -> ``upload_offset`` (how much the server already holds: a
  resumed upload continues there; ``offset == size`` means it holds the whole blob), then
  ``blob_chunk``\\s from that offset, then ``upload_end`` -> ``upload_done`` or
  ``blob_refused``;
- download: ``download_begin`` (from an offset) -> ``download_info`` (the size), then the
  server's ``blob_chunk``\\s up to the end (or ``blob_refused``).

Every chunk carries the SHA-256 of its bytes, so a chunk damaged on the way is refused at
once; the whole blob is checked against its hash before it is published on either side.
Chunk bytes travel as base64 in the JSON text frame, like every other message.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import attrs

from ._limits import MAX_CLIENT_ID_LENGTH, MAX_REASON_LENGTH, MAX_TOKEN_LENGTH

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Largest chunk any peer may send, in bytes before base64 (a server announces its own).
HARD_MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: Largest blob size that can be declared at all (a server announces its own limit).
HARD_MAX_BLOB_BYTES = 1 << 50


def is_content_hash(value: object) -> bool:
    """True for a SHA-256 hash as trio_sync writes it: 64 lowercase hex digits."""
    return type(value) is str and _HEX64.fullmatch(value) is not None


def _hash(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not is_content_hash(value):
        raise ValueError(f"{attribute.name} must be 64 lowercase hex digits (SHA-256)")


def _count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 0 <= value <= HARD_MAX_BLOB_BYTES:
        raise ValueError(f"{attribute.name} must be an integer in [0, 2**50], got {value!r}")


def _text(limit: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and (type(value) is not str or len(value) > limit):
            raise ValueError(f"{attribute.name} must be text of at most {limit} characters")

    return check


def _chunk_data(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # base64 of at most HARD_MAX_CHUNK_BYTES; its alphabet is checked when decoded.
    if type(value) is not str or len(value) > (HARD_MAX_CHUNK_BYTES + 2) // 3 * 4:
        raise ValueError(f"{attribute.name} must be base64 of at most {HARD_MAX_CHUNK_BYTES} B")


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_LENGTH else reason[: MAX_REASON_LENGTH - 3] + "..."


@attrs.frozen
class BlobHello:
    """Client -> server, first message of a blob connection: who I am (the store is the
    URL's path, as for a sync connection)."""

    TYPE: ClassVar[str] = "blob_hello"
    protocol_version: int = attrs.field(validator=_count)
    client_id: str = attrs.field(validator=_text(MAX_CLIENT_ID_LENGTH))
    token: str | None = attrs.field(default=None, repr=False, validator=_text(MAX_TOKEN_LENGTH))


@attrs.frozen
class BlobWelcome:
    """Server -> client: the connection may transfer blobs, within these limits."""

    TYPE: ClassVar[str] = "blob_welcome"
    chunk_bytes: int = attrs.field(validator=_count)
    max_blob_bytes: int = attrs.field(validator=_count)


@attrs.frozen
class UploadBegin:
    """Client -> server: I am about to upload the blob ``hash`` of ``size`` bytes."""

    TYPE: ClassVar[str] = "upload_begin"
    hash: str = attrs.field(validator=_hash)
    size: int = attrs.field(validator=_count)


@attrs.frozen
class UploadOffset:
    """Server -> client: send from ``offset`` on (``offset == size``: I hold it all)."""

    TYPE: ClassVar[str] = "upload_offset"
    hash: str = attrs.field(validator=_hash)
    offset: int = attrs.field(validator=_count)


@attrs.frozen
class BlobChunk:
    """Either way: ``data`` (base64) is the blob's bytes at ``offset``; ``digest`` is the
    SHA-256 of those bytes."""

    TYPE: ClassVar[str] = "blob_chunk"
    hash: str = attrs.field(validator=_hash)
    offset: int = attrs.field(validator=_count)
    data: str = attrs.field(repr=False, validator=_chunk_data)
    digest: str = attrs.field(validator=_hash)


@attrs.frozen
class UploadEnd:
    """Client -> server: that was the last chunk; check and publish the blob."""

    TYPE: ClassVar[str] = "upload_end"
    hash: str = attrs.field(validator=_hash)


@attrs.frozen
class UploadDone:
    """Server -> client: the blob is stored whole and verified."""

    TYPE: ClassVar[str] = "upload_done"
    hash: str = attrs.field(validator=_hash)


@attrs.frozen
class DownloadBegin:
    """Client -> server: send me the blob ``hash`` from ``offset`` on."""

    TYPE: ClassVar[str] = "download_begin"
    hash: str = attrs.field(validator=_hash)
    offset: int = attrs.field(validator=_count)


@attrs.frozen
class DownloadInfo:
    """Server -> client: the blob has ``size`` bytes; chunks from the asked offset follow."""

    TYPE: ClassVar[str] = "download_info"
    hash: str = attrs.field(validator=_hash)
    size: int = attrs.field(validator=_count)


@attrs.frozen
class BlobRefused:
    """Server -> client: the transfer of ``hash`` cannot go on.

    ``retryable``: try again later (storage full, the blob not uploaded yet). ``missing``:
    the server does not hold that blob (yet). The connection stays usable.
    """

    TYPE: ClassVar[str] = "blob_refused"
    hash: str = attrs.field(validator=_hash)
    reason: str = attrs.field(converter=_clip)
    retryable: bool = True
    missing: bool = False


BlobClientMessage = BlobHello | UploadBegin | BlobChunk | UploadEnd | DownloadBegin
BlobServerMessage = BlobWelcome | UploadOffset | BlobChunk | UploadDone | DownloadInfo | BlobRefused

BLOB_MESSAGE_TYPES: tuple[type[BlobClientMessage | BlobServerMessage], ...] = (
    BlobHello,
    BlobWelcome,
    UploadBegin,
    UploadOffset,
    BlobChunk,
    UploadEnd,
    UploadDone,
    DownloadBegin,
    DownloadInfo,
    BlobRefused,
)
