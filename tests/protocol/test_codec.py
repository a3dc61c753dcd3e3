"""The codec: every message round-trips; untrusted input fails with a ProtocolError that says
what was wrong, never with a bare KeyError, TypeError or ValueError."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
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
    WireLimits,
    decode,
    encode,
)
from trio_sync.protocol._codec import converter, event_json

A1 = Event("todo.created", {"id": 1, "text": "milk", "tags": ["x"]}, "A", 1)
A2 = Event("todo.done", {"id": 1}, "A", 2)

MESSAGES = [
    Hello(PROTOCOL_VERSION, "A", "todo", 3, None, 0),
    Hello(PROTOCOL_VERSION, "A", "todo", 3, "srv", 17),
    Hello(PROTOCOL_VERSION, "A", "todo", 3, None, 0, token="v1.x.y"),
    Welcome(PROTOCOL_VERSION, "srv", "todo", 3, 17, "default", WireLimits()),
    Welcome(PROTOCOL_VERSION, "srv", "todo", 3, 17, "s1", WireLimits(max_push_events=7)),
    Error("bad", fatal=True),
    Push(1, 0, (A1, A2)),
    PushAck(1, 1, (5, 6)),
    ServerAhead(2, 9),
    PushRejected(3, "gap"),
    PushRejected(3, "disk full", retryable=True),
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
HELLO = json.loads(encode(Hello(PROTOCOL_VERSION, "A", "default", 1, None, 0)))


def push_with_args(args: object) -> str:
    return frame(type="push", push_id=1, parent=0, events=[{**EVENT, "args": args}])


def push_with_seq(client_seq: int) -> str:
    return frame(type="push", push_id=1, parent=0, events=[{**EVENT, "client_seq": client_seq}])


def nested(depth: int) -> str:
    """A push whose args hold a value nested ``depth`` arrays deep (built as text: the
    standard library cannot encode it)."""
    return push_with_args({"deep": 1}).replace(
        '"deep": 1', '"deep": ' + "[" * depth + "1" + "]" * depth
    )


BAD_FRAMES = [
    # (what was tried, frame, error class, words the message must contain)
    ("binary frame", b"\x00\x01", MalformedFrame, "a binary frame must be a blob chunk"),
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
        "client_seq must be a positive 64-bit integer",
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
    # Values that one peer could store but another could not read back.
    (
        "lone surrogate in args",
        push_with_args({"x": "\ud800"}),
        InvalidMessage,
        "push.events[0].args.x: string holds a lone UTF-16 surrogate",
    ),
    (
        "lone surrogate in an event name",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "name": "\udc00"}]),
        InvalidMessage,
        "lone UTF-16 surrogate",
    ),
    (
        "lone surrogate in the hello's client_id",
        json.dumps({**HELLO, "client_id": "\ud800"}),
        InvalidMessage,
        "hello.client_id: string holds a lone UTF-16 surrogate",
    ),
    (
        "lone surrogate in an object key",
        push_with_args({"\ud800": 1}),
        InvalidMessage,
        "(key): string holds a lone UTF-16 surrogate",
    ),
    (
        "client_seq of 2**63",
        push_with_seq(2**63),
        InvalidMessage,
        "is outside the signed 64-bit range",
    ),
    (
        "client_seq of 2**64",
        push_with_seq(2**64),
        InvalidMessage,
        "is outside the signed 64-bit range",
    ),
    ("client_seq of 2**64 + 1", push_with_seq(2**64 + 1), InvalidMessage, "signed 64-bit range"),
    (
        "parent of 2**63",
        frame(type="push", push_id=1, parent=2**63, events=[EVENT]),
        InvalidMessage,
        "push.parent: integer 9223372036854775808 is outside the signed 64-bit range",
    ),
    (
        "integer of 5000 digits",
        frame(type="ping", nonce=0).replace("0", "9" * 5000),
        MalformedFrame,
        "an integer literal has too many digits",
    ),
    (
        "negative 2**63 + 1 in args",
        push_with_args({"n": -(2**63) - 1}),
        InvalidMessage,
        "push.events[0].args.n: integer -9223372036854775809 is outside the signed 64-bit range",
    ),
    ("NaN in args", push_with_args({"x": math.nan}), InvalidMessage, "args.x: float nan"),
    ("Infinity in args", push_with_args({"x": math.inf}), InvalidMessage, "float inf"),
    ("-Infinity in args", push_with_args({"y": [-math.inf]}), InvalidMessage, "args.y[0]"),
    ("1e400 in args", push_with_args({"x": 1}).replace(": 1}", ": 1e400}"), InvalidMessage, "inf"),
    ("args nested 900 deep", nested(900), InvalidMessage, "deeper than 32"),
    ("args nested 2000 deep", nested(2000), MalformedFrame, "too deeply"),
    ("args nested 33 deep", nested(33), InvalidMessage, "deeper than 32"),
    (
        "unknown field",
        frame(type="ping", nonce=1, admin=True),
        InvalidMessage,
        "extra fields found",
    ),
    (
        "unknown field in an event",
        frame(type="push", push_id=1, parent=0, events=[{**EVENT, "seq_override": 9}]),
        InvalidMessage,
        "seq_override",
    ),
    (
        "client id of 10,000 characters",
        json.dumps({**HELLO, "client_id": "x" * 10_000}),
        InvalidMessage,
        "client_id is longer than 128 characters",
    ),
    (
        "client id with a control character",
        json.dumps({**HELLO, "client_id": "a\nb"}),
        InvalidMessage,
        "control character",
    ),
    (
        "event over max_event_bytes",
        push_with_args({"pad": "x" * (1024 * 1024)}),
        InvalidMessage,
        "exceeds the limit max_event_bytes=1048576",
    ),
    (
        "push over max_push_events",
        frame(
            type="push",
            push_id=1,
            parent=0,
            events=[{**EVENT, "client_seq": i} for i in range(1, 1002)],
        ),
        InvalidMessage,
        "push of 1001 events exceeds the limit max_push_events=1000",
    ),
    (
        "a token longer than 4096 characters",
        json.dumps({**HELLO, "token": "t" * 5000}),
        InvalidMessage,
        "token is longer than 4096",
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


def test_a_token_never_shows_in_a_repr() -> None:
    hello = Hello(PROTOCOL_VERSION, "A", "default", 1, None, 0, token="v1.secret.sig")
    assert "secret" not in repr(hello) and "secret" not in str(hello)


def test_the_limits_a_server_announces_apply() -> None:
    small = WireLimits(max_frame_bytes=4096, max_event_bytes=100, max_push_events=2)
    with pytest.raises(InvalidMessage, match="max_event_bytes=100"):
        decode(push_with_args({"pad": "x" * 200}), small)
    with pytest.raises(MalformedFrame, match="max_frame_bytes=4096"):
        decode(push_with_args({"pad": "x" * 5000}), small)


def test_limits_that_could_never_deliver_an_accepted_event_are_refused() -> None:
    with pytest.raises(ValueError, match="leaves no room in a frame"):
        WireLimits(max_frame_bytes=2048, max_event_bytes=2000)


def test_64_bit_edges_are_accepted() -> None:
    for value in (2**63 - 1, -(2**63)):
        push = decode(push_with_args({"n": value}))
        assert isinstance(push, Push) and push.events[0].args["n"] == value
    assert isinstance(decode(push_with_seq(2**63 - 1)), Push)


def test_deep_args_under_the_recursion_limit_are_refused_without_recursing() -> None:
    assert sys.getrecursionlimit() >= 1000
    with pytest.raises(ProtocolError):
        decode(nested(100_000))


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedFrame, match="exceeds"):
        decode(" " * (4 * 1024 * 1024 + 1))


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


@pytest.mark.parametrize("as_bytes", [False, True])
def test_long_digit_runs_outside_integers_are_no_integers(as_bytes: bool) -> None:
    # What was tried: 19 and more digits where no integer literal is (inside a string, in
    # a float's fraction or exponent) pass the quick digit-run check and then the exact
    # one; a literal past 64 bits next to them is still refused, in str and bytes frames.
    from trio_sync.protocol._json import loads

    def text(value: str) -> str | bytes:
        return value.encode() if as_bytes else value

    fine = '{"a": "12345678901234567890123", "b": 0.12345678901234567890, "c": 1e1234567}'
    assert loads(text(fine.replace("1e1234567", "1.5e-3")))["a"] == "12345678901234567890123"
    assert loads(text('{"n": 9223372036854775807}'))["n"] == 2**63 - 1
    with pytest.raises(InvalidMessage, match="is outside the signed 64-bit range"):
        loads(text('{"a": "1234567890123456789012", "n": 18446744073709551617}'))


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        (("n", {"a": 1}, "A", 1, None), None),
        (("n", {}, "A", 2**63 - 1, 7), None),
        (("", {}, "A", 1, None), "must be a non-empty string"),
        (("n\x00", {}, "A", 1, None), "control character"),
        (("n", {}, "A\u2028", 1, None), "control character"),
        (("n", {}, "A", 0, None), "client_seq must be a positive 64-bit integer"),
        (("n", {}, "A", 1, 2**63), "seq must be a positive 64-bit integer"),
        (("n", {}, "A", True, None), "client_seq must be a positive 64-bit integer"),
    ],
)
def test_events_from_the_wire_are_checked_as_the_constructor_checks(
    fields: tuple[Any, ...], refusal: str | None
) -> None:
    # What was tried: the fast constructor every parsed event goes through, against the
    # validating one, on good fields and on each kind of bad field.
    if refusal is None:
        made, parsed = Event(*fields), Event.from_json(*fields)
        assert parsed == made and repr(parsed) == repr(made) and parsed.key == made.key
        return
    with pytest.raises(ValueError, match=refusal):
        Event(*fields)
    with pytest.raises(ValueError, match=refusal):
        Event.from_json(*fields)


_GOOD_EVENT = {"name": "todo.created", "args": {"a": 1}, "client_id": "A", "client_seq": 1}
_BAD_FIELDS: dict[str, tuple[object, ...]] = {
    "name": ("", "n\x00", "x" * 257, 7, None),
    "args": ({"d": [[[[1]]]]}, {"d": {"e": [1, {"f": 2}]}}, [], "a", None),
    "client_id": ("B\u2028", "", "c" * 129, 3),
    "client_seq": (2**63 - 1, 0, -1, 2**63, True, 1.0, "1", None),
    "seq": (1, 2**63 - 1, 0, 2**63, False, 2.0, "2"),
}


@st.composite
def _event_fields(draw: st.DrawFn) -> dict[str, object]:
    """A good event with one field (or none) made bad, or an extra or missing field."""
    event: dict[str, object] = {**_GOOD_EVENT, "seq": draw(st.sampled_from([None, 5]))}
    field = draw(st.sampled_from([None, "extra", "missing", *_BAD_FIELDS]))
    if field == "extra":
        event["extra"] = 1
    elif field == "missing":
        del event[draw(st.sampled_from(sorted(event)))]
    elif field is not None:
        event[field] = draw(st.sampled_from(_BAD_FIELDS[field]) | json_values)
    return event


def _decode_one_check_at_a_time(frame: str, limits: WireLimits) -> object:
    """What decode did before its checks of a batch's events were inlined: each event
    structured on its own, then the batch built, then the count, then each event's
    content (depth, and size when the frame is larger than one event may be)."""
    from trio_sync.protocol._codec import _structure_event
    from trio_sync.protocol._events import check_event_content
    from trio_sync.protocol._json import loads

    body = loads(frame)
    kind = body.pop("type")
    cls = Push if kind == "push" else PullPage
    events = tuple(
        _structure_event(item, kind, f"{kind}.events[{index}]")
        for index, item in enumerate(body["events"])
    )
    try:
        batch = cls(**{**body, "events": events})
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"invalid {kind!r} message: {exc} @ {kind}") from None
    if cls is Push and len(events) > limits.max_push_events:
        raise InvalidMessage(
            f"push of {len(events)} events exceeds the limit max_push_events="
            f"{limits.max_push_events}"
        )
    for index, event in enumerate(events):
        check_event_content(
            event,
            path=f"{kind}.events[{index}]",
            limits=limits,
            measure=len(frame) > limits.max_event_bytes,
        )
    return batch


@settings(max_examples=500)
@given(
    st.lists(st.one_of(_event_fields(), _event_fields(), _event_fields(), json_values), max_size=4),
    st.sampled_from(["push", "pull_page"]),
    st.sampled_from([1, 5, -1]),
    st.sampled_from([0, 3, -2]),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([1, 2, 100]),
    st.sampled_from([40, 1000, 1_048_576]),
)
def test_a_batch_is_checked_as_one_check_at_a_time(
    raw: list[Any],
    kind: str,
    first_field: int,
    second_field: int,
    max_depth: int,
    max_push_events: int,
    max_event_bytes: int,
) -> None:
    # What was tried: frames whose events are good or bad in every field (often twice
    # over, with args too deep beside another fault), whose batch fields are bad too
    # (negative ids, seqs where none belong, gaps), over and under the count and size
    # limits, against the checks decode made one at a time before they were inlined: the
    # same message, or the same error, the first one in the same order. (A review found
    # the first inlined version said "too deep" before a later event's, the batch's or
    # the count's error.)
    fields = ("push_id", "parent") if kind == "push" else ("pull_id", "head")
    body = {"type": kind, fields[0]: first_field, fields[1]: second_field, "events": raw}
    frame = json.dumps(body)
    limits = WireLimits(
        max_depth=max_depth, max_push_events=max_push_events, max_event_bytes=max_event_bytes
    )
    for _ in range(2):  # and again, the identifiers known good by now
        try:
            expected: object = _decode_one_check_at_a_time(frame, limits)
        except InvalidMessage as exc:
            expected = str(exc)
        try:
            got: object = decode(frame, limits)
        except InvalidMessage as exc:
            got = str(exc)
        assert got == expected
        assert repr(got) == repr(expected)  # 1 and True are equal, and print apart


_DEEP = {"name": "a", "args": {"d": [[1]]}, "client_id": "A", "client_seq": 1, "seq": None}


@pytest.mark.parametrize(
    ("frame", "limits", "message"),
    [
        (
            {"type": "push", "push_id": 1, "parent": 0, "events": [_DEEP, 1]},
            WireLimits(max_depth=1),
            r"expected a JSON object, got int @ push.events\[1\]",
        ),
        (
            {"type": "push", "push_id": 1, "parent": 0, "events": [{**_DEEP, "seq": 1}]},
            WireLimits(max_depth=1),
            "pushed events must not carry a seq",
        ),
        (
            {
                "type": "push",
                "push_id": 1,
                "parent": 0,
                "events": [_DEEP, {**_DEEP, "client_seq": 2}],
            },
            WireLimits(max_depth=1, max_push_events=1),
            "push of 2 events exceeds the limit max_push_events=1",
        ),
        (
            {"type": "push", "push_id": 1, "parent": 0, "events": [_DEEP]},
            WireLimits(max_depth=1),
            r"push.events\[0\].args: nested deeper than 1 levels",
        ),
    ],
)
def test_args_too_deep_are_reported_after_the_errors_found_before_them(
    frame: dict[str, Any], limits: WireLimits, message: str
) -> None:
    # Found by a review of the inlined checks: they said "too deep" before a later
    # event's error, the batch's, or the count's, which decode reported first before.
    with pytest.raises(InvalidMessage, match=message):
        decode(json.dumps(frame), limits)


def _page_of(args_list: list[dict[str, Any]]) -> str:
    events = [
        {"name": "a", "args": args, "client_id": "A", "client_seq": n, "seq": n}
        for n, args in enumerate(args_list, start=1)
    ]
    return json.dumps({"type": "pull_page", "pull_id": 1, "events": events, "head": 9})


@pytest.mark.parametrize(
    ("args_list", "too_deep"),
    [
        ([{"i": 1}, {}, {"s": "x"}], None),
        # Brackets inside strings only add to the frame's counts: the args are walked.
        ([{"s": "[{"}, {"t": "}]"}], None),
        ([{"i": 1}, {"d": [1]}], None),  # one level below the args: within max_depth=1
        ([{"i": 1}, {"d": [[1]]}], 1),
        ([{"d": {"e": {}}}, {"i": 1}], 0),
        # A string's brackets beside a nested value: still found.
        ([{"s": "{{"}, {"d": [[]]}], 1),
    ],
)
def test_args_nesting_is_found_whatever_brackets_the_frame_holds(
    args_list: list[dict[str, Any]], too_deep: int | None
) -> None:
    # What was tried: pull pages whose events' args are flat or nest one or two levels,
    # some with brackets inside strings, under max_depth=1. decode skips walking the
    # args when the frame's bracket counts prove every event flat; one nested value must
    # still be refused, naming its event.
    frame = _page_of(args_list)
    limits = WireLimits(max_depth=1)
    if too_deep is None:
        page = decode(frame, limits)
        assert isinstance(page, PullPage)
        assert [event.args for event in page.events] == args_list
    else:
        with pytest.raises(
            InvalidMessage, match=rf"pull_page.events\[{too_deep}\].args: nested deeper than 1"
        ):
            decode(frame, limits)


@settings(max_examples=300)
@given(
    st.dictionaries(st.text(), json_values, max_size=4),
    st.text(min_size=1, max_size=20).filter(str.isprintable),
    st.integers(min_value=1, max_value=2**63 - 1),
    st.none() | st.integers(min_value=1, max_value=2**63 - 1),
)
def test_an_events_json_is_the_converters_form_written_out(
    args: dict[str, Any], name: str, client_seq: int, seq: int | None
) -> None:
    # What was tried: events of any storable args, names with quotes and backslashes,
    # positions up to 2**63-1, with and without a seq: event_json writes the object the
    # converter's unstructure gives, byte for byte (it no longer calls the converter).
    try:
        event = Event(name=name, args=args, client_id='c\\"1', client_seq=client_seq, seq=seq)
        expected = orjson.dumps(converter.unstructure(event)).decode()
    except (TypeError, ValueError):
        return  # not an event (a name or value the rules refuse, or orjson cannot write)
    assert event_json(event) == expected


def test_a_pushed_event_over_the_byte_limit_in_fewer_characters_is_refused() -> None:
    # What was tried (a review's finding): a push whose event is 909 bytes of UTF-8 (300
    # "€") in a frame of fewer characters than max_event_bytes=500: the server measured
    # events only when the frame's *characters* were over the limit, and took it.
    event = {"name": "n", "args": {"a": "€" * 300}, "client_id": "c", "client_seq": 1, "seq": None}
    frame = json.dumps(
        {"type": "push", "push_id": 1, "parent": 0, "events": [event]}, ensure_ascii=False
    )
    assert len(frame) < 500 < len(frame.encode())
    with pytest.raises(InvalidMessage, match="event of 909 bytes exceeds the limit"):
        decode(frame, WireLimits(max_event_bytes=500))


def test_a_pushed_event_that_grows_when_written_again_is_measured() -> None:
    # What was tried (a review's finding): a push of one event whose args hold 1e15
    # written 30 times, a frame of 269 bytes, under max_event_bytes=300: stored (orjson's
    # form) each 1e15 is 1000000000000000.0 and the event 578 bytes. The server measured
    # events only when the frame was over the limit, and took it.
    args = "[" + ",".join(["1e15"] * 30) + "]"
    frame = (
        '{"type":"push","push_id":1,"parent":0,"events":[{"name":"n","args":{"a":'
        + args
        + '},"client_id":"c","client_seq":1,"seq":null}]}'
    )
    assert len(frame) < 300
    with pytest.raises(InvalidMessage, match="event of 578 bytes exceeds the limit"):
        decode(frame, WireLimits(max_event_bytes=300))
