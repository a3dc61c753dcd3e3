"""The event: the one fact that is synced."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs
import orjson

from .._errors import InvalidEvent, InvalidMessage, ProtocolError
from ._json import INT64_MAX, check_depth, dumps, loads
from ._limits import DEFAULT_LIMITS, MAX_CLIENT_ID_LENGTH, MAX_NAME_LENGTH, WireLimits

JsonObject = dict[str, Any]

#: Characters that have no place in an identifier: controls (C0, C1), line and paragraph
#: separators, zero-width and bidirectional formatting (they garble or disguise text in
#: logs and terminals).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


#: Identifiers found valid, by limit: client ids and event names repeat in every page.
_KNOWN_GOOD: dict[tuple[str, int], None] = {}
_KNOWN_GOOD_MAX = 65_536


def plain_str(value: object) -> object:
    """A str subclass (a ``StrEnum`` member) as its plain characters, whatever its own
    ``__str__`` says; anything else as it is."""
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def check_identifier(value: object, what: str, limit: int) -> str:
    """Returns ``value`` if it is a usable identifier (event name, client id, store id).

    Raises:
        ValueError: Not a non-empty string of at most ``limit`` printable characters.
    """
    if type(value) is str and (value, limit) in _KNOWN_GOOD:
        return value
    if type(value) is not str or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise ValueError(f"{what} {value!r} holds a control character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} holds a lone UTF-16 surrogate") from None
    if len(_KNOWN_GOOD) >= _KNOWN_GOOD_MAX:
        _KNOWN_GOOD.clear()
    _KNOWN_GOOD[value, limit] = None
    return value


def _identifier(limit: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_identifier(value, attribute.name, limit)

    return check


def check_position(value: object, what: str) -> None:
    """Raises ValueError unless ``value`` is a position (client_seq, seq): 1 to 2**63-1."""
    if type(value) is not int or not 1 <= value <= INT64_MAX:
        raise ValueError(f"{what} must be a positive 64-bit integer, got {value!r}")


def _position(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_position(value, attribute.name)


def _optional_position(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _position(instance, attribute, value)


def _json_object(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not dict or not all(type(key) is str for key in value):
        raise ValueError(f"{attribute.name} must be a JSON object with string keys")


@attrs.frozen(hash=False)
class Event:
    """One event in the log.

    Attributes:
        name: What happened, for example ``"todo.created"``.
        args: JSON object with the event's data.
        client_id: The client that committed it.
        client_seq: 1, 2, 3 ... per client, in commit order, never reused.
        seq: The global position the server gave it; ``None`` while pending.
    """

    name: str = attrs.field(validator=_identifier(MAX_NAME_LENGTH))
    args: JsonObject = attrs.field(validator=_json_object)
    client_id: str = attrs.field(validator=_identifier(MAX_CLIENT_ID_LENGTH))
    client_seq: int = attrs.field(validator=_position)
    seq: int | None = attrs.field(default=None, validator=_optional_position)
    #: The event's encoded JSON, kept once made: a server sends one event to many pullers.
    _wire: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @classmethod
    def from_json(
        cls, name: str, args: JsonObject, client_id: str, client_seq: int, seq: int | None
    ) -> Event:
        """An event of values parsed from JSON (a frame, a stored row, a draft normalised
        through JSON), whose field types the caller checked: only what JSON does not
        already promise is checked here (JSON object keys are strings), without the attrs
        validators' per-field calls (every pulled and committed event comes this way).

        Raises:
            ValueError: As the constructor: a bad name or client id, a bad position.
        """
        check_identifier(name, "name", MAX_NAME_LENGTH)
        check_identifier(client_id, "client_id", MAX_CLIENT_ID_LENGTH)
        check_position(client_seq, "client_seq")
        if seq is not None:
            check_position(seq, "seq")
        return _unchecked_event(name, args, client_id, client_seq, seq)

    @property
    def key(self) -> tuple[str, int]:
        """``(client_id, client_seq)``: what identifies an event across pushes."""
        return (self.client_id, self.client_seq)

    def same_fact(self, other: Event) -> bool:
        """True when both describe the same committed event (positions aside): the same
        JSON, so ``true``, ``1`` and ``1.0`` differ (Python's ``==`` would not tell)."""
        return (
            self.client_id == other.client_id
            and self.client_seq == other.client_seq
            and self.name == other.name
            and (self.args is other.args or canonical_json(self.args) == canonical_json(other.args))
        )

    def at(self, seq: int | None) -> Event:
        """This event with another global position (only the position is checked: the
        rest was when this event was made).

        Raises:
            ValueError: ``seq`` is not a position.
        """
        if seq is not None:
            check_position(seq, "seq")
        return _unchecked_event(self.name, self.args, self.client_id, self.client_seq, seq)


def _unchecked_event(
    name: str, args: JsonObject, client_id: str, client_seq: int, seq: int | None
) -> Event:
    """An Event made without its validators, from fields the caller checked."""
    event = _new_object(Event)
    _set_name(event, name)
    _set_args(event, args)
    _set_client_id(event, client_id)
    _set_client_seq(event, client_seq)
    _set_seq(event, seq)
    _set_wire(event, None)
    return event


# The slots' own setters: they skip the frozen class's __setattr__ (a pulled page makes
# thousands of events a second).
_new_object = object.__new__
_set_name, _set_args, _set_client_id, _set_client_seq, _set_seq, _set_wire = (
    Event.__dict__[field].__set__
    for field in ("name", "args", "client_id", "client_seq", "seq", "_wire")
)


def canonical_json(value: Any) -> bytes:
    """One encoding per JSON value (object keys sorted)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def event_size(name: str, args_json: bytes | str) -> int:
    """An event's size as limits count it: its name plus its args as UTF-8 JSON."""
    args_bytes = len(args_json) if isinstance(args_json, bytes) else len(args_json.encode())
    return len(name.encode()) + args_bytes


def check_event_content(
    event: Event, *, path: str, limits: WireLimits, measure: bool = True
) -> None:
    """Checks what the Event class cannot see alone: the args' values, depth and size
    (``measure=False`` when the caller knows the event is smaller than the limit).

    Raises:
        InvalidMessage: The args break a rule or the event is over the size limit.
    """
    # What the parsers let through is valid but for depth (see check_depth).
    check_depth(event.args, path=f"{path}.args", max_depth=limits.max_depth)
    if not measure:
        return
    size = event_size(event.name, dumps(event.args))
    if size > limits.max_event_bytes:
        raise InvalidMessage(
            f"{path}: event of {size} bytes exceeds the limit max_event_bytes="
            f"{limits.max_event_bytes}"
        )


_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _refuse_colliding_keys(value: Any) -> None:
    """Refuses an object whose keys become the same string in JSON (``1`` and ``"1"``,
    ``True`` and ``"true"``): writing it would keep one value and silently drop the other.

    Raises:
        ValueError: Two keys of one object are written alike.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                written: dict[str, object] = {}
                for key in item:
                    as_text = key if isinstance(key, str) else json.dumps(key)
                    if as_text in written:
                        raise ValueError(
                            f"keys {written[as_text]!r} and {key!r} are both {as_text!r} in "
                            "JSON: one of their values would be lost"
                        )
                    written[as_text] = key
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def json_dumps_compact(value: Any) -> bytes | str:
    """Compact JSON (UTF-8 bytes, or text), accepting only what JSON can hold (NaN and
    friends refused).

    orjson first. What it cannot write as the standard library would (keys that are not
    strings, integers past 64 bits, lone surrogates) goes to the standard library, which
    writes them (the checks after parsing refuse what is not storable). Datetimes and
    dataclasses are refused, as the standard library refuses them; a UUID and an enum
    member are written as their value. orjson writes NaN and the infinities as ``null``:
    output with a ``null`` in it is searched for them, and they are refused.

    Raises:
        TypeError, ValueError: The value is not JSON.
    """
    try:
        data = orjson.dumps(value, option=_ORJSON_STRICT)
    except TypeError:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except RecursionError:
            # orjson stops at 255 levels; the standard library at the stack's end.
            raise ValueError("nested too deeply to be written as JSON") from None
        _refuse_colliding_keys(value)
        return text
    if b"null" in data and _holds_non_finite(value):
        raise ValueError("Out of range float values are not JSON compliant")
    return data


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_non_finite(item) for item in value)
    return False


@attrs.frozen
class Draft:
    """A commit checked and normalised, waiting for its ``client_seq`` (given when it is
    written, so that concurrent commits number in the order they are written)."""

    name: str
    args: JsonObject

    def event(self, client_id: str, client_seq: int) -> Event:
        """The pending event this draft becomes."""
        return Event.from_json(self.name, self.args, client_id, client_seq, None)


def new_draft(name: str, args: object, *, limits: WireLimits = DEFAULT_LIMITS) -> Draft:
    """Checks and normalises application input for a commit.

    The args are normalised through JSON (tuples become lists, str and int subclasses
    plain values, keys strings) so that the event a client stores is exactly the one that
    comes back from the server. A name that is a str subclass (a ``StrEnum`` member)
    becomes its plain string too.

    Raises:
        InvalidEvent: The name is not a usable identifier, args is not a JSON object, a
            value cannot be stored by every peer (NaN, a 65-bit integer, a lone
            surrogate, nesting deeper than ``limits.max_depth``), or the event is larger
            than ``limits.max_event_bytes``.
    """
    if not isinstance(args, dict):
        raise InvalidEvent(f"args must be a dict, got {type(args).__name__}")
    name = plain_str(name)  # type: ignore[assignment]
    try:
        check_identifier(name, "event name", MAX_NAME_LENGTH)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(str(exc)) from None
    try:
        text = json_dumps_compact(args)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"args of {name!r} are not JSON: {exc}") from None
    try:
        normalised = loads(text, what="args")
        check_depth(normalised, path="args", max_depth=limits.max_depth)
    except ProtocolError as exc:
        raise InvalidEvent(f"event {name!r}: {exc}") from None
    # Measured as it is stored and sent: orjson's form (the standard library's, written
    # for keys that are not strings, puts 1e-05 where orjson puts 0.00001).
    size = event_size(name, text if isinstance(text, bytes) else dumps(normalised))
    if size > limits.max_event_bytes:
        raise InvalidEvent(
            f"event {name!r} of {size} bytes exceeds the limit of {limits.max_event_bytes} "
            "bytes (max_event_bytes)"
        )
    draft = _new_object(Draft)  # checked above: without the frozen class's __setattr__
    _set_draft_name(draft, name)
    _set_draft_args(draft, normalised)
    return draft


_set_draft_name, _set_draft_args = (Draft.__dict__[field].__set__ for field in ("name", "args"))


def new_event(
    name: str,
    args: object,
    client_id: str,
    client_seq: int,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
) -> Event:
    """Builds a pending event from application input (see :func:`new_draft`).

    Raises:
        InvalidEvent: As :func:`new_draft`, or a bad client id or client_seq.
    """
    draft = new_draft(name, args, limits=limits)
    try:
        return draft.event(client_id, client_seq)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(str(exc)) from None
