"""The codec: every message round-trips; untrusted input fails with a ProtocolError that says
what was wrong, never with a bare KeyError, TypeError or ValueError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sync import InvalidMessage, MalformedFrame, ProtocolError
from trio_sync.protocol import (
    PROTOCOL_VERSION,
    Error,
    Event,
    Hello,
    Ping,
    Pong,
    Pull,
    PullPage,
    Push,
    PushAck,
    PushRejected,
    ServerAhead,
    Welcome,
    decode,
    encode,
)

A1 = Event("todo.created", {"id": 1, "text": "milk", "tags": ["x"]}, "A", 1)
A2 = Event("todo.done", {"id": 1}, "A", 2)

MESSAGES = [
    Hello(PROTOCOL_VERSION, "A", "todo", 3, None, 0),
    Hello(PROTOCOL_VERSION, "A", "todo", 3, "srv", 17),
    Welcome(PROTOCOL_VERSION, "srv", "todo", 3, 17),
    Error("bad", fatal=True),
    Push(1, 0, (A1, A2)),
    PushAck(1, 1, (5, 6)),
    ServerAhead(2, 9),
    PushRejected(3, "gap"),
    Pull(1, 0),
    PullPage(1, (A1.at(1), A2.at(2)), 2),
    PullPage(2, (), 2),
    Ping(4),
    Pong(4, 10),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE)
def test_every_message_round_trips(message: object) -> None:
    frame = encode(message)  # type: ignore[arg-type]
    assert json.loads(frame)["type"] == message.TYPE  # type: ignore[attr-defined]
    assert decode(frame) == message


def frame(**body: object) -> str:
    return json.dumps(body)


EVENT = {"name": "a", "args": {}, "client_id": "A", "client_seq": 1, "seq": None}

BAD_FRAMES = [
    # (what was tried, frame, error class, words the message must contain)
    ("binary frame", b"\x00\x01", MalformedFrame, "binary frames"),
    ("not JSON", "{nope", MalformedFrame, "not valid JSON"),
    ("a JSON list", "[1, 2]", MalformedFrame, "must be a JSON object, got list"),
    ("no type", frame(nonce=1), InvalidMessage, "no 'type'"),
    ("unknown type", frame(type="hack"), InvalidMessage, "unknown message type 'hack'"),
    ("type not a string", frame(type=5), InvalidMessage, "unknown message type 5"),
    ("missing field", frame(type="ping"), InvalidMessage, "required field missing @ ping.nonce"),
    ("int as string", frame(type="ping", nonce="1"), InvalidMessage, "expected int, got str"),
    ("bool as int", frame(type="ping", nonce=True), InvalidMessage, "expected int, got bool"),
    ("float as int", frame(type="ping", nonce=1.0), InvalidMessage, "expected int, got float"),
    ("negative", frame(type="pull", pull_id=1, cursor=-1), InvalidMessage, "non-negative"),
    (
        "empty push",
        frame(type="push", push_id=1, parent=0, events=[]),
        InvalidMessage,
        "at least one event",
    ),
    (
        "events not a list",
        frame(type="push", push_id=1, parent=0, events=5),
        InvalidMessage,
        "push.events",
    ),
    (
        "args not an object",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "args": []}]),
        InvalidMessage,
        "expected a JSON object, got list @ push.events[0].args",
    ),
    (
        "pushed with seq",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "seq": 3}]),
        InvalidMessage,
        "must not carry a seq",
    ),
    (
        "client_seq 0",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "client_seq": 0}]),
        InvalidMessage,
        "client_seq must be a positive integer",
    ),
    (
        "empty name",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "name": ""}]),
        InvalidMessage,
        "name must be a non-empty string",
    ),
    (
        "push gap",
        frame(type="push", push_id=1, parent=0, events=[EVENT, {**EVENT, "client_seq": 3}]),
        InvalidMessage,
        "not consecutive commits",
    ),
    (
        "mixed clients",
        frame(
            type="push",
            push_id=1,
            parent=0,
            events=[EVENT, {**EVENT, "client_id": "B", "client_seq": 2}],
        ),
        InvalidMessage,
        "not consecutive commits",
    ),
    (
        "page gap",
        frame(
            type="pull_page",
            pull_id=1,
            head=3,
            events=[{**EVENT, "seq": 1}, {**EVENT, "client_seq": 2, "seq": 3}],
        ),
        InvalidMessage,
        "seq values are not contiguous: 1 then 3",
    ),
    (
        "page without seq",
        frame(type="pull_page", pull_id=1, head=3, events=[EVENT]),
        InvalidMessage,
        "must carry a seq",
    ),
]


@pytest.mark.parametrize(
    ("frame_", "error", "words"), [b[1:] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES]
)
def test_bad_frames_raise_a_clear_protocol_error(
    frame_: str | bytes, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        decode(frame_)
    assert words in str(caught.value)


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedFrame, match="exceeds"):
        decode(" " * (16 * 1024 * 1024 + 1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from([m.TYPE for m in MESSAGES] + ["x"])},
    optional={
        key: json_values | st.just(EVENT) | st.lists(st.just(EVENT))
        for key in (
            "nonce",
            "head",
            "events",
            "push_id",
            "parent",
            "cursor",
            "pull_id",
            "seqs",
            "reason",
            "client_id",
            "server_id",
            "first_client_seq",
        )
    },
)


@given(st.one_of(json_values.map(json.dumps), message_like.map(json.dumps), st.text()))
def test_decode_raises_only_protocol_errors(text: str) -> None:
    try:
        decode(text)
    except ProtocolError as exc:
        assert str(exc)
