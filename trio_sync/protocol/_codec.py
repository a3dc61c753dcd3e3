"""Encoding messages to frames and decoding untrusted frames back.

Every message is a JSON text frame except :class:`BlobChunk`, which is a binary frame (see
``_blob_messages.py``): :func:`encode_frame` picks the kind, :func:`decode` takes both.

Decoding is strict: a field of the wrong JSON type is refused, never coerced (cattrs would
turn ``"5"`` into ``5`` by default), unknown fields are refused, and every value must be
one that every peer can store and read back (see :mod:`._json`). Every failure is a
:class:`ProtocolError` whose message says what was wrong and where, and names the limit
when a limit was exceeded.

Encoding a pull page reuses each event's encoded JSON: a server sends the same new event
to every live puller, and encodes it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import cattrs
from cattrs.v import format_exception

from .._errors import InvalidMessage, MalformedFrame
from ._blob_messages import BlobChunk, decode_chunk_frame, encode_chunk_frame
from ._events import (
    _KNOWN_GOOD,
    Event,
    JsonObject,
    _unchecked_event,
    check_event_content,
)
from ._json import INT64_MAX, dumps, loads, nested_too_deep, utf8_length
from ._limits import DEFAULT_LIMITS, MAX_CLIENT_ID_LENGTH, MAX_NAME_LENGTH, WireLimits
from ._messages import MESSAGE_TYPES, Message, PullPage, Push

T = TypeVar("T")

#: The default largest frame (servers announce their own in the welcome).
MAX_FRAME_BYTES = DEFAULT_LIMITS.max_frame_bytes


def _strict(kind: type[T]) -> Any:
    def structure(value: object, _: object) -> T:
        # type() rather than isinstance(): True is an int, and must not pass for one.
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _structure_json_object(value: object, _: object) -> JsonObject:
    if type(value) is not dict:
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _describe(exc: BaseException, type_: type | None) -> str:
    # Our hooks and validators word their own messages; cattrs' wording covers the rest
    # (missing fields, unexpected shapes).
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, KeyError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    for kind in (int, str, bool, float):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook_func(lambda cls: cls == JsonObject, _structure_json_object)
    return converter


converter = _make_converter()


def event_json(event: Event) -> str:
    """The event's JSON object as text, made once per event and kept."""
    wire = event._wire
    if wire is None:
        # The converter's unstructured form, written out: the same object, key for key
        # (tests/protocol/test_codec.py checks), without the converter's call per event.
        wire = dumps(
            {
                "name": event.name,
                "args": event.args,
                "client_id": event.client_id,
                "client_seq": event.client_seq,
                "seq": event.seq,
            }
        ).decode()
        object.__setattr__(event, "_wire", wire)
    return wire


def encode_frame(message: Message) -> str | bytes:
    """Returns the frame for ``message``: binary for a blob chunk, JSON text otherwise."""
    if type(message) is BlobChunk:
        return encode_chunk_frame(message)
    return encode(message)


def encode(message: Message) -> str:
    """Returns the JSON text frame for ``message``.

    Raises:
        TypeError: ``message`` is a blob chunk, which only travels as a binary frame
            (:func:`encode_frame`).
    """
    if type(message) is PullPage:
        events = ",".join(event_json(event) for event in message.events)
        return (
            f'{{"type":"pull_page","pull_id":{message.pull_id},"events":[{events}],'
            f'"head":{message.head}}}'
        )
    if type(message) is Push:
        events = ",".join(event_json(event) for event in message.events)
        return (
            f'{{"type":"push","push_id":{message.push_id},"parent":{message.parent},'
            f'"events":[{events}]}}'
        )
    if type(message) is BlobChunk:
        raise TypeError("a blob chunk travels as a binary frame: use encode_frame()")
    body: dict[str, Any] = {"type": message.TYPE}
    body.update(converter.unstructure(message))
    return dumps(body).decode()


def decode(frame: str | bytes | bytearray, limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Parses one frame received from a peer, checking it against ``limits``.

    A text frame is a JSON message; a binary frame is a blob chunk (whether the connection
    may carry one is its session's decision, as for any message).

    Raises:
        MalformedFrame: The frame is too large, not JSON or not a JSON object, or binary
            and not a blob chunk.
        InvalidMessage: The object is not a known message, a field is missing, unknown, of
            the wrong type or out of range, a value cannot be stored by every peer, or a
            limit is exceeded.
    """
    if len(frame) > limits.max_frame_bytes:
        unit = "characters" if isinstance(frame, str) else "bytes"
        raise MalformedFrame(
            f"frame of {len(frame)} {unit} exceeds the limit max_frame_bytes="
            f"{limits.max_frame_bytes}"
        )
    if not isinstance(frame, str):
        return decode_chunk_frame(frame)
    body = loads(frame)
    if type(body) is not dict:
        raise MalformedFrame(f"frame must be a JSON object, got {type(body).__name__}")
    kind = body.pop("type", None)
    if kind is None:
        raise InvalidMessage("message has no 'type' field")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise InvalidMessage(f"unknown message type {repr(kind)[:40]}")
    if cls is BlobChunk:
        raise InvalidMessage("a 'blob_chunk' travels as a binary frame, never as JSON text")
    if cls is Push or cls is PullPage:
        # The messages that carry events, and so most of the traffic: structured by hand
        # (as strictly as cattrs does the rest, and several times faster).
        measure = _may_hold_a_large_event(frame, limits.max_event_bytes)
        depth_limits = None if measure or _only_flat_args(frame, body) else limits
        batch, too_deep_at = _structure_batch(body, cls, kind, depth_limits)
        _check_events(batch, limits, measure=measure, too_deep_at=too_deep_at)
        return batch
    try:
        return converter.structure(body, cls)
    except Exception as exc:  # cattrs wraps field errors in (Class)ValidationError groups
        details = "; ".join(cattrs.transform_error(exc, path=kind, format_exception=_describe))
        raise InvalidMessage(f"invalid {kind!r} message: {details}") from None


_BATCH_FIELDS = {Push: ("push_id", "parent", "events"), PullPage: ("pull_id", "events", "head")}
_EVENT_FIELDS = ("name", "args", "client_id", "client_seq", "seq")
_EVENT_TYPES = {"name": str, "args": dict, "client_id": str, "client_seq": int}


#: How much larger an event can be, as it is stored (orjson's form), than as a peer wrote
#: it: ``1e15,`` in an array is stored as ``1000000000000000.0,`` (3.8x; 4.5x for one
#: number alone). Escapes and whitespace only shrink.
_MAX_GROWTH = 5


def _may_hold_a_large_event(frame: str, max_event_bytes: int) -> bool:
    """Whether an event of ``frame`` may be over ``max_event_bytes`` (then each is
    measured): the frame's UTF-8 bytes, grown as much as any event can grow when it is
    written again, are over it (the characters alone decide first, without encoding)."""
    limit = max_event_bytes // _MAX_GROWTH
    return len(frame) > limit or utf8_length(frame) > limit


def _only_flat_args(frame: str, body: dict[str, Any]) -> bool:
    """Whether no event of a batch can nest deeper than one level, known from the frame's
    brackets alone (two C-level counts instead of a walk of every event's args).

    A batch whose events are all objects with object args holds at least one ``{`` for
    itself, two for each event (the event and its args) and one ``[`` (its list); every
    nested object or array, and every bracket inside a string, adds to those counts. So
    counts at that least mean flat args, and one level is within any ``max_depth``
    (at least 1). A batch any of whose events is not such an object fails its checks
    whatever this says.
    """
    events = body.get("events")
    return (
        type(events) is list and frame.count("[") == 1 and frame.count("{") == 1 + 2 * len(events)
    )


def _invalid(kind: str, detail: str, path: str) -> InvalidMessage:
    return InvalidMessage(f"invalid {kind!r} message: {detail} @ {path}")


#: The key sets the structured messages must have exactly (compared in one C-level step).
_KEY_SETS = {fields: frozenset(fields) for fields in (*_BATCH_FIELDS.values(), _EVENT_FIELDS)}


def _check_fields(body: dict[str, Any], fields: tuple[str, ...], kind: str, path: str) -> None:
    if body.keys() != _KEY_SETS[fields]:
        for field in fields:
            if field not in body:
                raise _invalid(kind, "required field missing", f"{path}.{field}")
        extra = ", ".join(sorted(key for key in body if key not in fields))
        raise _invalid(kind, f"extra fields found ({extra})", path)


def _structure_batch(
    body: dict[str, Any],
    cls: type[Push] | type[PullPage],
    kind: str,
    depth_limits: WireLimits | None = None,
) -> tuple[Push | PullPage, int | None]:
    """The batch, and (with ``depth_limits``) the index of its first event whose args nest
    deeper than they allow (None: none does)."""
    fields = _BATCH_FIELDS[cls]
    _check_fields(body, fields, kind, kind)
    for field in fields:
        if field != "events" and type(body[field]) is not int:
            got = type(body[field]).__name__
            raise _invalid(kind, f"expected int, got {got}", f"{kind}.{field}")
    raw = body["events"]
    if type(raw) is not list:
        raise _invalid(kind, f"expected a list, got {type(raw).__name__}", f"{kind}.events")
    events, too_deep_at = _structure_events(raw, kind, depth_limits)
    try:
        return cls(**{**body, "events": events}), too_deep_at
    except (TypeError, ValueError) as exc:
        raise _invalid(kind, str(exc), kind) from None


_EVENT_KEYS = _KEY_SETS[_EVENT_FIELDS]


def _structure_events(
    raw: list[Any], kind: str, depth_limits: WireLimits | None
) -> tuple[tuple[Event, ...], int | None]:
    """The events of a batch (:func:`_structure_event` for each) and, with
    ``depth_limits``, the index of the first whose args nest deeper than they allow (its
    error is raised by :func:`_check_events`, after every error found before it in the
    order the checks have always run: the events', the batch's, the count's).

    The checks are the same, inlined for the events that pass them (every event of a
    frame is checked, and most frames are all events); an event that fails one goes
    through the checks one by one, which name what is wrong and where.
    """
    events = []
    too_deep_at: int | None = None
    max_depth = depth_limits.max_depth if depth_limits is not None else 0
    known_good = _KNOWN_GOOD
    for index, item in enumerate(raw):
        if (
            type(item) is dict
            and item.keys() == _EVENT_KEYS
            and type(name := item["name"]) is str
            and type(args := item["args"]) is dict
            and type(client_id := item["client_id"]) is str
            and type(client_seq := item["client_seq"]) is int
            and 1 <= client_seq <= INT64_MAX
            and ((seq := item["seq"]) is None or (type(seq) is int and 1 <= seq <= INT64_MAX))
            and (name, MAX_NAME_LENGTH) in known_good
            and (client_id, MAX_CLIENT_ID_LENGTH) in known_good
        ):
            event = _unchecked_event(name, args, client_id, client_seq, seq)
        else:
            event = _structure_event(item, kind, f"{kind}.events[{index}]")
        if (
            depth_limits is not None
            and too_deep_at is None
            and nested_too_deep(event.args, max_depth)
        ):
            too_deep_at = index
        events.append(event)
    return tuple(events), too_deep_at


def _structure_event(raw: object, kind: str, path: str) -> Event:
    if type(raw) is not dict:
        raise _invalid(kind, f"expected a JSON object, got {type(raw).__name__}", path)
    _check_fields(raw, _EVENT_FIELDS, kind, path)
    for field, expected in _EVENT_TYPES.items():
        if type(raw[field]) is not expected:
            got = type(raw[field]).__name__
            wanted = "a JSON object" if expected is dict else expected.__name__
            raise _invalid(kind, f"expected {wanted}, got {got}", f"{path}.{field}")
    seq = raw["seq"]
    if seq is not None and type(seq) is not int:
        raise _invalid(kind, f"expected int or null, got {type(seq).__name__}", f"{path}.seq")
    try:
        return Event.from_json(raw["name"], raw["args"], raw["client_id"], raw["client_seq"], seq)
    except (TypeError, ValueError) as exc:
        raise _invalid(kind, str(exc), path) from None


def _check_events(
    message: Push | PullPage, limits: WireLimits, *, measure: bool, too_deep_at: int | None
) -> None:
    """What is left to check of a batch's events: their count; with ``measure``, the
    size and depth of each (every event's depth is checked here then); otherwise only
    the depth of the event at ``too_deep_at``, the first found too deep while
    structuring (None: none was)."""
    if isinstance(message, Push) and len(message.events) > limits.max_push_events:
        raise InvalidMessage(
            f"push of {len(message.events)} events exceeds the limit max_push_events="
            f"{limits.max_push_events}"
        )
    if measure:
        indexes: Iterable[int] = range(len(message.events))
    else:
        indexes = () if too_deep_at is None else (too_deep_at,)
    for index in indexes:
        check_event_content(
            message.events[index],
            path=f"{message.TYPE}.events[{index}]",
            limits=limits,
            measure=measure,
        )
