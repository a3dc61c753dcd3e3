"""The event: the one fact that is synced."""

from __future__ import annotations

import json
from typing import Any

import attrs

from .._errors import InvalidEvent

#: Longest event name accepted; names are identifiers such as ``"todo.created"``.
MAX_NAME_LENGTH = 256
#: Longest client id accepted.
MAX_CLIENT_ID_LENGTH = 128

JsonObject = dict[str, Any]


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _optional_positive_int(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _positive_int(instance, attribute, value)


def _bounded_str(limit: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not str or not value:
            raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")
        if len(value) > limit:
            raise ValueError(f"{attribute.name} is longer than {limit} characters")

    return check


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

    name: str = attrs.field(validator=_bounded_str(MAX_NAME_LENGTH))
    args: JsonObject = attrs.field(validator=_json_object)
    client_id: str = attrs.field(validator=_bounded_str(MAX_CLIENT_ID_LENGTH))
    client_seq: int = attrs.field(validator=_positive_int)
    seq: int | None = attrs.field(default=None, validator=_optional_positive_int)

    @property
    def key(self) -> tuple[str, int]:
        """``(client_id, client_seq)``: what identifies an event across pushes."""
        return (self.client_id, self.client_seq)

    def same_fact(self, other: Event) -> bool:
        """True when both describe the same committed event (positions aside)."""
        return (
            self.client_id == other.client_id
            and self.client_seq == other.client_seq
            and self.name == other.name
            and self.args == other.args
        )

    def at(self, seq: int | None) -> Event:
        """This event with another global position."""
        return attrs.evolve(self, seq=seq)


def new_event(name: str, args: object, client_id: str, client_seq: int) -> Event:
    """Builds a pending event from application input.

    The args are normalised through JSON (tuples become lists) so that the event a client
    stores is exactly the one that comes back from the server.

    Raises:
        InvalidEvent: The name is not a non-empty string, or args is not a JSON object.
    """
    if not isinstance(args, dict):
        raise InvalidEvent(f"args must be a dict, got {type(args).__name__}")
    try:
        normalised = json.loads(json.dumps(args, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"args of {name!r} are not JSON: {exc}") from None
    try:
        return Event(name=name, args=normalised, client_id=client_id, client_seq=client_seq)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(str(exc)) from None
