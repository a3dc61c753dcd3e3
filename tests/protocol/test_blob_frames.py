"""Blob chunks as binary frames: they round-trip, and hostile bytes fail with a
ProtocolError that says what was wrong (never a struct.error or a ValueError)."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sync import InvalidMessage, MalformedFrame, ProtocolError
from trio_sync.protocol import WireLimits, decode, encode, encode_frame
from trio_sync.protocol._blob_messages import (
    CHUNK_FRAME_TAG,
    CHUNK_HEADER_BYTES,
    HARD_MAX_CHUNK_BYTES,
    BlobCheck,
    BlobCheckResult,
    BlobChunk,
    BlobCorrupt,
    UploadBegin,
    refused_for_others_bytes,
)

DATA = bytes(range(256)) * 40
HASH = hashlib.sha256(b"the whole blob").hexdigest()
CHUNK = BlobChunk(HASH, 12_345, DATA, hashlib.sha256(DATA).hexdigest())


def header(*, tag: int = CHUNK_FRAME_TAG, offset: int = 0) -> bytes:
    return struct.pack(">B32sQ32s", tag, bytes.fromhex(HASH), offset, b"\0" * 32)


def test_a_chunk_is_a_binary_frame_and_round_trips() -> None:
    frame = encode_frame(CHUNK)
    assert isinstance(frame, bytes) and len(frame) == CHUNK_HEADER_BYTES + len(DATA)
    assert decode(frame) == CHUNK
    assert decode(bytearray(frame)) == CHUNK  # what a WebSocket library may hand over
    empty = BlobChunk(HASH, 0, b"", hashlib.sha256(b"").hexdigest())
    assert decode(encode_frame(empty)) == empty  # the session refuses it, not the codec


def test_other_messages_stay_json_text() -> None:
    message = UploadBegin(hash=HASH, size=5)
    assert encode_frame(message) == encode(message)
    with pytest.raises(TypeError, match="binary frame"):
        encode(CHUNK)


BAD_BINARY = [
    ("empty frame", b"", MalformedFrame, "got tag none"),
    ("another tag", header(tag=2) + b"x", MalformedFrame, "got tag 0x02"),
    ("a text message as bytes", b'{"type":"ping","nonce":1}', MalformedFrame, "got tag 0x7b"),
    ("shorter than the header", header()[:40], MalformedFrame, "shorter than its 73-byte"),
    ("offset past any blob", header(offset=2**60) + b"x", InvalidMessage, "past any blob"),
    (
        "more than any chunk",
        header() + bytes(HARD_MAX_CHUNK_BYTES + 1),
        InvalidMessage,
        f"over the limit of {HARD_MAX_CHUNK_BYTES}",
    ),
]


@pytest.mark.parametrize(
    ("frame_", "error", "words"), [r[1:] for r in BAD_BINARY], ids=[r[0] for r in BAD_BINARY]
)
def test_bad_binary_frames_raise_a_clear_protocol_error(
    frame_: bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        decode(frame_, WireLimits(max_frame_bytes=8 * 1024 * 1024))
    assert words in str(caught.value)


def test_a_binary_frame_over_the_frame_limit_is_refused_before_parsing() -> None:
    limit = WireLimits().max_frame_bytes
    with pytest.raises(MalformedFrame, match=f"frame of {limit + 1} bytes exceeds"):
        decode(header() + bytes(limit + 1 - CHUNK_HEADER_BYTES))


def test_a_chunk_as_json_text_is_refused() -> None:
    text = json.dumps(
        {"type": "blob_chunk", "hash": HASH, "offset": 0, "data": "eA==", "digest": HASH}
    )
    with pytest.raises(InvalidMessage, match="binary frame"):
        decode(text)


@given(st.binary(max_size=200) | st.binary(max_size=100).map(lambda tail: header() + tail))
def test_decode_of_any_bytes_raises_only_protocol_errors(frame: bytes) -> None:
    try:
        message = decode(frame)
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(message, BlobChunk) and message.data == frame[CHUNK_HEADER_BYTES:]


OTHER = hashlib.sha256(b"another blob").hexdigest()
CHECKS = [
    BlobCheck((HASH,)),
    BlobCheck((HASH, OTHER)),
    BlobCorrupt(HASH),
    BlobCheckResult(()),
    BlobCheckResult((OTHER,)),
]


@pytest.mark.parametrize("message", CHECKS, ids=lambda m: m.TYPE)
def test_check_and_corrupt_messages_round_trip_as_json(message: object) -> None:
    frame = encode(message)  # type: ignore[arg-type]
    assert isinstance(frame, str)
    assert decode(frame) == message


BAD_CHECKS = [
    ("no hashes", {"type": "blob_check", "hashes": []}, "at least one hash"),
    ("too many", {"type": "blob_check", "hashes": [HASH] * 1001}, "at most 1000 SHA-256"),
    ("not a hash", {"type": "blob_check", "hashes": ["abc"]}, "64 lowercase hex digits"),
    ("upper case", {"type": "blob_check", "hashes": [HASH.upper()]}, "64 lowercase hex"),
    ("a string", {"type": "blob_check", "hashes": HASH}, "SHA-256 hashes"),
    ("a number", {"type": "blob_check", "hashes": 5}, "blob_check"),
    ("a hash as a number", {"type": "blob_check", "hashes": [5]}, "expected str, got int"),
    ("extra field", {"type": "blob_check", "hashes": [HASH], "x": 1}, "extra fields"),
    ("a bad report", {"type": "blob_corrupt", "hash": "x"}, "64 lowercase hex digits"),
    ("a bad result", {"type": "blob_check_result", "missing": [1]}, "expected str"),
]


@pytest.mark.parametrize(
    ("body", "words"), [r[1:] for r in BAD_CHECKS], ids=[r[0] for r in BAD_CHECKS]
)
def test_bad_check_messages_raise_a_clear_protocol_error(body: object, words: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(json.dumps(body))
    assert words in str(caught.value)


def test_which_upload_refusals_blame_bytes_that_were_not_the_uploaders() -> None:
    # Retried without counting an attempt: only these (the server's storage counts).
    assert refused_for_others_bytes(
        "the server refused: the uploaded bytes do not match the hash: discarded, upload again"
    )
    assert refused_for_others_bytes("the upload moved on meanwhile: partial holds 5 bytes")
    assert not refused_for_others_bytes("the server refused: the server's storage is full")
    assert not refused_for_others_bytes("corrupt chunk refused: digest mismatch")
