"""JSON values every peer can store and read back, and the fast JSON codec.

A value that one peer accepts must survive SQLite, another language's JSON parser and a
round trip through this module unchanged. So the rules are stricter than Python's ``json``:

* strings are valid Unicode (no lone UTF-16 surrogates, which UTF-8 cannot hold);
* integers fit in a signed 64-bit integer (SQLite's and most parsers' limit);
* floats are finite (JSON has no NaN or Infinity);
* objects have string keys, and nesting is bounded (a deep value costs every reader
  recursion).

:func:`loads` parses untrusted text with orjson and, when orjson refuses it or an integer
literal may be out of range, parses it again with the standard library so that the error can
name the offending field. :func:`check_value` enforces the rules on a parsed value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from .._errors import InvalidMessage, MalformedFrame

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: A JSON integer literal long enough that it may not fit in 64 bits. orjson silently turns
#: integers beyond 64 bits into floats, so a frame holding one is parsed again exactly.
_LONG_INT_LITERAL = re.compile(r"(?<![\w.])-?\d{19,}(?![\d.eE])")
#: Maps every ASCII digit to ``0`` and every other byte to ``x``: a run of 19 zeros in the
#: mapped text is a run of 19 digits, found ten times faster than the pattern above finds
#: anything (which then only looks at the rare text that has such a run).
_DIGIT_MAP = bytes(ord("0") if chr(byte) in "0123456789" else ord("x") for byte in range(256))
_DIGIT_RUN = b"0" * 19


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of a value that :func:`check_value` accepted."""
    return orjson.dumps(value)


def utf8_length(text: str) -> int:
    """How many bytes ``text`` takes in UTF-8 (what size limits count), without encoding
    it when it is ASCII (one byte a character); a lone surrogate counts as its three
    bytes, as the parsers refuse it elsewhere."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def loads(text: str | bytes, *, what: str = "frame") -> Any:
    """Parses untrusted JSON text.

    Raises:
        MalformedFrame: The text is not JSON (or nests deeper than any parser allows).
        InvalidMessage: The JSON holds a value outside the rules, naming where.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _loads_precisely(text, what)
    if _may_hold_long_int(text):
        return _loads_precisely(text, what)
    return value


def _may_hold_long_int(text: str | bytes) -> bool:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _DIGIT_RUN not in raw.translate(_DIGIT_MAP):
        return False
    # A run of 19 digits: is it an integer literal (not part of a string or a float)?
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return _LONG_INT_LITERAL.search(text) is not None


def _loads_precisely(text: str | bytes, what: str) -> Any:
    """The standard library's parser, which keeps what orjson refuses (lone surrogates,
    NaN, huge integers) so that :func:`check_value` can say where it is."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise MalformedFrame(f"{what} nests too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        message = str(exc)
        if "integer string conversion" in message:
            message = "an integer literal has too many digits"
        raise MalformedFrame(f"{what} is not valid JSON: {message}") from None
    root = value.get("type") if isinstance(value, dict) else None
    check_value(
        value,
        path=root if isinstance(root, str) and root.isidentifier() else what,
        max_depth=10_000,
    )
    # Every rule holds, yet orjson refused: nothing we know of does this, but never pass
    # on text our own fast path cannot read back.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"{what} is not valid JSON: {exc}") from None


_CONTAINERS = (dict, list)


def check_depth(value: Any, *, path: str, max_depth: int) -> None:
    """Checks only how deeply ``value`` nests: enough for what :func:`loads` returned,
    whose every other rule the parsers already saw to (orjson refuses lone surrogates and
    non-finite numbers; a frame that may hold an integer beyond 64 bits is parsed exactly
    and checked in full). Only containers are visited, level by level.

    Raises:
        InvalidMessage: ``value`` nests deeper than ``max_depth`` levels.
    """
    if nested_too_deep(value, max_depth):
        raise InvalidMessage(f"{path}: nested deeper than {max_depth} levels")


def nested_too_deep(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests deeper than ``max_depth`` levels (:func:`check_depth`
    without the message, for callers that build it only when needed)."""
    if type(value) is dict:
        for item in value.values():
            if type(item) in _CONTAINERS:
                break
        else:
            return False  # flat, as most args are: one level
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        inner = []
        for container in level:
            items = container.values() if type(container) is dict else container
            inner.extend([item for item in items if type(item) in _CONTAINERS])
        if inner and depth + 1 >= max_depth + 1:
            return True
        depth += 1
        level = inner
    return False


def check_value(value: Any, *, path: str, max_depth: int) -> None:
    """Checks that ``value`` (parsed JSON, or what an application passed) follows the rules.

    Raises:
        InvalidMessage: A value breaks a rule; the message names its path, for example
            ``push.events[0].args.when: float nan is not finite``.
    """
    _check(value, path, max_depth, 0)


def _check(value: Any, path: str, max_depth: int, depth: int) -> None:
    kind = type(value)
    if kind is str:
        _check_string(value, path)
    elif kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidMessage(
                f"{path}: integer {_describe_int(value)} is outside the signed 64-bit range"
            )
    elif kind is dict:
        if depth >= max_depth:
            raise InvalidMessage(f"{path}: nested deeper than {max_depth} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidMessage(f"{path}: object key {key!r} is not a string")
            _check_string(key, f"{path} (key)")
            _check(item, f"{path}.{key}", max_depth, depth + 1)
    elif kind is list:
        if depth >= max_depth:
            raise InvalidMessage(f"{path}: nested deeper than {max_depth} levels")
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", max_depth, depth + 1)
    elif kind is float:
        if not math.isfinite(value):
            raise InvalidMessage(f"{path}: float {value} is not finite")
    elif value is None or kind is bool:
        pass
    else:
        raise InvalidMessage(f"{path}: {kind.__name__} is not a JSON value")


def _check_string(text: str, path: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(f"{path}: string holds a lone UTF-16 surrogate") from None


def _describe_int(value: int) -> str:
    bits = value.bit_length()
    return str(value) if bits <= 128 else f"of {bits} bits"
