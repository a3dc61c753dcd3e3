"""Encoding messages to JSON text frames and decoding untrusted frames back.

Decoding is strict: a field of the wrong JSON type is refused, never coerced (cattrs would
turn ``"5"`` into ``5`` by default), so what a peer sends is exactly what it meant. Every
failure is a :class:`ProtocolError` whose message says what was wrong and where.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import cattrs
from cattrs.v import format_exception

from .._errors import InvalidMessage, MalformedFrame
from ._events import JsonObject
from ._messages import MESSAGE_TYPES, Message

T = TypeVar("T")

#: Frames larger than this are refused before parsing (both transports enforce it too).
MAX_FRAME_BYTES = 16 * 1024 * 1024


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
    converter = cattrs.Converter(detailed_validation=True)
    for kind in (int, str, bool, float):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook_func(lambda cls: cls == JsonObject, _structure_json_object)
    return converter


converter = _make_converter()


def encode(message: Message) -> str:
    """Returns the JSON text frame for ``message``."""
    body: dict[str, Any] = {"type": message.TYPE}
    body.update(converter.unstructure(message))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode(frame: str | bytes) -> Message:
    """Parses one frame received from a peer.

    Raises:
        MalformedFrame: The frame is binary, too large, not JSON or not a JSON object.
        InvalidMessage: The object is not a known message, or a field is missing, of the
            wrong type or out of range.
    """
    if not isinstance(frame, str):
        raise MalformedFrame("binary frames are not part of the protocol; send JSON text")
    if len(frame) > MAX_FRAME_BYTES:
        raise MalformedFrame(f"frame of {len(frame)} characters exceeds {MAX_FRAME_BYTES}")
    try:
        body = json.loads(frame)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedFrame(f"frame is not valid JSON: {exc}") from None
    if type(body) is not dict:
        raise MalformedFrame(f"frame must be a JSON object, got {type(body).__name__}")
    kind = body.pop("type", None)
    if kind is None:
        raise InvalidMessage("message has no 'type' field")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise InvalidMessage(f"unknown message type {kind!r}")
    try:
        return converter.structure(body, cls)
    except Exception as exc:  # cattrs wraps field errors in (Class)ValidationError groups
        details = "; ".join(cattrs.transform_error(exc, path=kind, format_exception=_describe))
        raise InvalidMessage(f"invalid {kind!r} message: {details}") from None
