"""Encoding messages to JSON text frames and decoding untrusted frames back.

Decoding is strict: a field of the wrong JSON type is refused, never coerced (cattrs would
turn ``"5"`` into ``5`` by default), unknown fields are refused, and every value must be
one that every peer can store and read back (see :mod:`._json`). Every failure is a
:class:`ProtocolError` whose message says what was wrong and where, and names the limit
when a limit was exceeded.

Encoding a pull page reuses each event's encoded JSON: a server sends the same new event
to every live puller, and encodes it once.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs
from cattrs.v import format_exception

from .._errors import InvalidMessage, MalformedFrame
from ._events import Event, JsonObject, check_event_content
from ._json import dumps, loads
from ._limits import DEFAULT_LIMITS, WireLimits
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
        wire = dumps(converter.unstructure(event)).decode()
        object.__setattr__(event, "_wire", wire)
    return wire


def encode(message: Message) -> str:
    """Returns the JSON text frame for ``message``."""
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
    body: dict[str, Any] = {"type": message.TYPE}
    body.update(converter.unstructure(message))
    return dumps(body).decode()


def decode(frame: str | bytes, limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Parses one frame received from a peer, checking it against ``limits``.

    Raises:
        MalformedFrame: The frame is binary, too large, not JSON or not a JSON object.
        InvalidMessage: The object is not a known message, a field is missing, unknown, of
            the wrong type or out of range, a value cannot be stored by every peer, or a
            limit is exceeded.
    """
    if not isinstance(frame, str):
        raise MalformedFrame("binary frames are not part of the protocol; send JSON text")
    if len(frame) > limits.max_frame_bytes:
        raise MalformedFrame(
            f"frame of {len(frame)} characters exceeds the limit max_frame_bytes="
            f"{limits.max_frame_bytes}"
        )
    body = loads(frame)
    if type(body) is not dict:
        raise MalformedFrame(f"frame must be a JSON object, got {type(body).__name__}")
    kind = body.pop("type", None)
    if kind is None:
        raise InvalidMessage("message has no 'type' field")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise InvalidMessage(f"unknown message type {repr(kind)[:40]}")
    try:
        message = converter.structure(body, cls)
    except Exception as exc:  # cattrs wraps field errors in (Class)ValidationError groups
        details = "; ".join(cattrs.transform_error(exc, path=kind, format_exception=_describe))
        raise InvalidMessage(f"invalid {kind!r} message: {details}") from None
    if isinstance(message, Push | PullPage):
        _check_events(message, limits)
    return message


def _check_events(message: Push | PullPage, limits: WireLimits) -> None:
    if isinstance(message, Push) and len(message.events) > limits.max_push_events:
        raise InvalidMessage(
            f"push of {len(message.events)} events exceeds the limit max_push_events="
            f"{limits.max_push_events}"
        )
    for index, event in enumerate(message.events):
        check_event_content(event, path=f"{message.TYPE}.events[{index}]", limits=limits)
