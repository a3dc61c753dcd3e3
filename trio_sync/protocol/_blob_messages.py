"""Wire messages of a blob connection: file contents, in chunks, by content hash.

A blob connection is a second connection to the same URL (one per transfer worker), so a
large transfer never delays the event sync. It opens with :class:`BlobHello` (the same
token check as a sync connection), then carries one transfer at a time:

- upload: ``upload_begin`` -> ``upload_offset`` (how much the server already holds: a
  resumed upload continues there; ``offset == size`` means it holds the whole blob), then
  ``blob_chunk``\\s from that offset, then ``upload_end`` -> ``upload_done`` or
  ``blob_refused``;
- download: ``download_begin`` (from an offset) -> ``download_info`` (the size), then the
  server's ``blob_chunk``\\s up to the end (or ``blob_refused``);
- a question: ``blob_check`` (up to :data:`MAX_CHECK_HASHES` hashes) -> ``blob_check_result``
  (those the server lacks): a client asks it once per lifecycle about the blobs it
  uploaded, and uploads again the ones the server lost;
- a report: ``blob_corrupt`` (a download's bytes did not match the hash) -> the server
  hashes its own copy, moves it aside when it does not match, and answers
  ``blob_check_result`` (the hash among ``missing``: it does not hold it any more).

Every chunk carries the SHA-256 of its bytes, so a chunk damaged on the way is refused at
once; the whole blob is checked against its hash before it is published on either side.

Every message is a JSON text frame except the chunks: a chunk is one *binary* frame, a
fixed header then the bytes (:func:`encode_chunk_frame`), so its bytes are neither
base64-encoded (a third more bytes, and an encode and a decode per chunk) nor parsed as
JSON nor validated as UTF-8 by the WebSocket library. The header holds everything the
receiver checks before it touches the bytes; it is as strict as the JSON decoder.
"""

from __future__ import annotations

import re
import struct
from typing import Any, ClassVar

import attrs

from .._errors import InvalidMessage, MalformedFrame
from ._limits import MAX_CLIENT_ID_LENGTH, MAX_REASON_LENGTH, MAX_TOKEN_LENGTH

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Largest chunk any peer may send, in bytes (a server announces its own).
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
    if type(value) is not bytes or len(value) > HARD_MAX_CHUNK_BYTES:
        raise ValueError(f"{attribute.name} must be at most {HARD_MAX_CHUNK_BYTES} bytes")


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
    """Either way: ``data`` is the blob's bytes at ``offset``; ``digest`` is the SHA-256
    of those bytes (checked by the receiver, see ``files/_chunks.py``). Travels as a
    binary frame (:func:`encode_chunk_frame`), never as JSON."""

    TYPE: ClassVar[str] = "blob_chunk"
    hash: str = attrs.field(validator=_hash)
    offset: int = attrs.field(validator=_count)
    data: bytes = attrs.field(repr=False, validator=_chunk_data)
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


def _wait(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_DOWNLOAD_WAIT:
        raise ValueError(f"{attribute.name} must be whole seconds in [0, {MAX_DOWNLOAD_WAIT}]")


#: The longest a client may ask the server to wait for a blob being uploaded (seconds).
MAX_DOWNLOAD_WAIT = 3600


@attrs.frozen
class DownloadBegin:
    """Client -> server: send me the blob ``hash`` from ``offset`` on.

    ``wait``: if the server lacks the blob but is receiving its upload right now, it may
    hold the answer up to this many seconds (and its own limit) until the upload ends,
    rather than answer ``missing`` at once and leave the client to back off.
    """

    TYPE: ClassVar[str] = "download_begin"
    hash: str = attrs.field(validator=_hash)
    offset: int = attrs.field(validator=_count)
    wait: int = attrs.field(default=0, validator=_wait)


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
    what the transfer needs is not there yet, and is coming: for a download the blob, for
    an upload room in the quota (contents no file refers to, deleted once old enough); the
    client retries without counting it against its attempts. The connection stays usable.
    """

    TYPE: ClassVar[str] = "blob_refused"
    hash: str = attrs.field(validator=_hash)
    reason: str = attrs.field(converter=_clip)
    retryable: bool = True
    missing: bool = False


#: How a server's refusal begins when an upload's partial held bytes that were not the
#: uploader's (another client's, or an upload of the same contents racing it).
NOT_THE_UPLOADERS_BYTES = (
    "the uploaded bytes do not match the hash",
    "the upload moved on meanwhile",
)


def refused_for_others_bytes(reason: str) -> bool:
    """Whether a refusal of an upload says its partial held bytes that were not the
    uploader's: a client whose own copy is sound then sends it again without counting an
    attempt (only then: a refusal for the server's storage counts, so that the client
    gives up and says why)."""
    return any(what in reason for what in NOT_THE_UPLOADERS_BYTES)


#: The most hashes one ``blob_check`` (or its result) may hold: 1,000 take 67 KB of JSON.
MAX_CHECK_HASHES = 1000


def _hashes(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        type(value) is not tuple
        or len(value) > MAX_CHECK_HASHES
        or not all(is_content_hash(item) for item in value)
    ):
        raise ValueError(
            f"{attribute.name} must be a list of at most {MAX_CHECK_HASHES} SHA-256 hashes "
            "(64 lowercase hex digits each)"
        )


def _some_hashes(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _hashes(instance, attribute, value)
    if not value:
        raise ValueError(f"{attribute.name} must hold at least one hash")


@attrs.frozen
class BlobCheck:
    """Client -> server: which of these blobs do you lack? Answered ``blob_check_result``.

    A client asks once per lifecycle about the blobs it uploaded and still holds, and
    uploads again those the server lost (see ``files/_repair.py``)."""

    TYPE: ClassVar[str] = "blob_check"
    hashes: tuple[str, ...] = attrs.field(validator=_some_hashes)


@attrs.frozen
class BlobCorrupt:
    """Client -> server: the bytes you sent of ``hash`` do not hash to it. The server
    trusts no client: it hashes its own copy, moves it aside when it does not match, and
    answers ``blob_check_result``."""

    TYPE: ClassVar[str] = "blob_corrupt"
    hash: str = attrs.field(validator=_hash)


@attrs.frozen
class BlobCheckResult:
    """Server -> client: of the blobs a ``blob_check`` or ``blob_corrupt`` asked about,
    those the server does not hold (now)."""

    TYPE: ClassVar[str] = "blob_check_result"
    missing: tuple[str, ...] = attrs.field(validator=_hashes)


BlobClientMessage = (
    BlobHello | UploadBegin | BlobChunk | UploadEnd | DownloadBegin | BlobCheck | BlobCorrupt
)
BlobServerMessage = (
    BlobWelcome
    | UploadOffset
    | BlobChunk
    | UploadDone
    | DownloadInfo
    | BlobRefused
    | BlobCheckResult
)

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
    BlobCheck,
    BlobCorrupt,
    BlobCheckResult,
)


# --- the binary chunk frame -------------------------------------------------------------

#: First byte of a chunk frame: names the layout, so that another binary message (or a
#: second layout) can come later without guessing.
CHUNK_FRAME_TAG = 0x01
#: Tag, blob hash (32 raw bytes), offset (unsigned 64-bit, big-endian), chunk digest (32
#: raw bytes); the chunk's bytes follow, up to the frame's end.
_CHUNK_HEADER = struct.Struct(">B32sQ32s")
CHUNK_HEADER_BYTES = _CHUNK_HEADER.size


def encode_chunk_frame(chunk: BlobChunk) -> bytes:
    """The binary frame of ``chunk``: a 73-byte header, then its bytes."""
    header = _CHUNK_HEADER.pack(
        CHUNK_FRAME_TAG, bytes.fromhex(chunk.hash), chunk.offset, bytes.fromhex(chunk.digest)
    )
    return header + chunk.data


def decode_chunk_frame(frame: bytes | bytearray | memoryview) -> BlobChunk:
    """Parses a binary frame received from a peer. The digest is not checked here (that
    is a hash of the whole chunk: the receiver does it off the event loop).

    Raises:
        MalformedFrame: Not a chunk frame (another tag, shorter than the header).
        InvalidMessage: An offset past any blob, or more bytes than any chunk holds.
    """
    if len(frame) < 1 or frame[0] != CHUNK_FRAME_TAG:
        tag = f"0x{frame[0]:02x}" if len(frame) else "none (an empty frame)"
        raise MalformedFrame(
            f"a binary frame must be a blob chunk (tag 0x{CHUNK_FRAME_TAG:02x}); got tag {tag}"
        )
    if len(frame) < CHUNK_HEADER_BYTES:
        raise MalformedFrame(
            f"a blob chunk frame of {len(frame)} bytes is shorter than its "
            f"{CHUNK_HEADER_BYTES}-byte header"
        )
    _, raw_hash, offset, raw_digest = _CHUNK_HEADER.unpack_from(frame)
    size = len(frame) - CHUNK_HEADER_BYTES
    if size > HARD_MAX_CHUNK_BYTES:
        raise InvalidMessage(
            f"a blob chunk of {size} bytes is over the limit of {HARD_MAX_CHUNK_BYTES}"
        )
    if offset > HARD_MAX_BLOB_BYTES:
        raise InvalidMessage(f"a blob chunk at offset {offset} is past any blob's end (2**50)")
    return BlobChunk(
        hash=raw_hash.hex(),
        offset=offset,
        data=bytes(frame[CHUNK_HEADER_BYTES:]),
        digest=raw_digest.hex(),
    )
