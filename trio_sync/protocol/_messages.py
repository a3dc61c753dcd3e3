"""Wire messages: frozen attrs classes, one per message type.

Every frame is a JSON object whose ``"type"`` names the class (the ``TYPE`` attribute).
docs/protocol.md describes the conversation; the validators here make sure a message that
decodes is also one a peer is allowed to send (positive positions, contiguous batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any, ClassVar

import attrs

from ._blob_messages import BLOB_MESSAGE_TYPES, BlobClientMessage, BlobServerMessage
from ._events import Event, check_identifier
from ._json import INT64_MAX
from ._limits import (
    MAX_CLIENT_ID_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_REASON_LENGTH,
    MAX_TOKEN_LENGTH,
    WireLimits,
)

#: Version of the wire protocol itself; both sides must speak the same one.
#: 2: stores, tokens, limits in the welcome, retryable push refusals.
#: 3: file blobs: chunks as binary frames, ``download_begin.wait``, ``blob_check`` and
#: ``blob_corrupt`` (a blob connection says it in its ``blob_hello``).
PROTOCOL_VERSION = 3


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 0 <= value <= INT64_MAX:
        raise ValueError(f"{attribute.name} must be a non-negative 64-bit integer, got {value!r}")


def _optional_non_negative(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _non_negative(instance, attribute, value)


def _bounded(limit: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and len(value) > limit:  # type: ignore[arg-type]
            raise ValueError(f"{attribute.name} is longer than {limit} characters")

    return check


def _client_id(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_identifier(value, attribute.name, MAX_CLIENT_ID_LENGTH)


def _clip_reason(reason: str) -> str:
    # A reason is text for people; one that is too long is cut, not refused.
    return reason if len(reason) <= MAX_REASON_LENGTH else reason[: MAX_REASON_LENGTH - 3] + "..."


def _check_contiguous_client_seqs(events: Sequence[Event]) -> None:
    for before, after in pairwise(events):
        if after.key != (before.client_id, before.client_seq + 1):
            raise ValueError(
                f"events are not consecutive commits of one client: {before.key} then {after.key}"
            )


def _check_contiguous_seqs(events: Sequence[Event]) -> None:
    for before, after in pairwise(events):
        if before.seq is None or after.seq != before.seq + 1:
            raise ValueError(f"seq values are not contiguous: {before.seq} then {after.seq}")


# --- handshake ------------------------------------------------------------------------


@attrs.frozen
class Hello:
    """Client -> server, first message: who I am and where I am."""

    TYPE: ClassVar[str] = "hello"
    protocol_version: int
    client_id: str = attrs.field(validator=_client_id)
    schema_name: str = attrs.field(validator=_bounded(MAX_LABEL_LENGTH))
    schema_version: int = attrs.field(validator=_non_negative)
    #: The server identity this client last synced with (None on first contact).
    server_id: str | None = attrs.field(validator=_bounded(MAX_LABEL_LENGTH))
    #: The last global seq the client holds.
    cursor: int = attrs.field(validator=_non_negative)
    #: A token from ``trio-sync token`` when the server requires one. Never shown in a repr
    #: (and so never in a log line).
    token: str | None = attrs.field(default=None, repr=False, validator=_bounded(MAX_TOKEN_LENGTH))
    #: The highest client_seq this client's store has committed (0: none yet), which the
    #: server compares with what it holds from this id to catch a reused id. None: not
    #: said (the server skips the check).
    last_client_seq: int | None = attrs.field(default=None, validator=_optional_non_negative)


@attrs.frozen
class Welcome:
    """Server -> client: the server's identity, schema and head."""

    TYPE: ClassVar[str] = "welcome"
    protocol_version: int
    #: The identity of this store's log (new each time a store is created).
    server_id: str = attrs.field(validator=_bounded(MAX_LABEL_LENGTH))
    schema_name: str = attrs.field(validator=_bounded(MAX_LABEL_LENGTH))
    schema_version: int = attrs.field(validator=_non_negative)
    head: int = attrs.field(validator=_non_negative)
    #: The store this connection serves.
    store_id: str = attrs.field(validator=_bounded(MAX_LABEL_LENGTH))
    #: What the server accepts: clients refuse bigger events at commit() and size pushes.
    limits: WireLimits
    #: The highest client_seq this store holds from the connecting client (0: none).
    last_client_seq: int = attrs.field(default=0, validator=_non_negative)


@attrs.frozen
class Error:
    """Either way: a fatal problem with the connection; the sender closes it next."""

    TYPE: ClassVar[str] = "error"
    reason: str = attrs.field(converter=_clip_reason)
    #: True when retrying cannot help (schema mismatch); the client reports "incompatible".
    fatal: bool = False
    #: With a reused client id: the highest client_seq the server holds from that id, so
    #: that ``Client.reset()`` can continue after it.
    last_client_seq: int | None = attrs.field(default=None, validator=_optional_non_negative)


# --- push -----------------------------------------------------------------------------


def _pending_batch(instance: Push, attribute: attrs.Attribute[Any], value: object) -> None:
    events: tuple[Event, ...] = value  # type: ignore[assignment]
    if not events:
        raise ValueError("a push carries at least one event")
    if any(event.seq is not None for event in events):
        raise ValueError("pushed events must not carry a seq")
    _check_contiguous_client_seqs(events)


@attrs.frozen
class Push:
    """Client -> server: append these events after ``parent``."""

    TYPE: ClassVar[str] = "push"
    push_id: int = attrs.field(validator=_non_negative)
    parent: int = attrs.field(validator=_non_negative)
    events: tuple[Event, ...] = attrs.field(validator=_pending_batch)


@attrs.frozen
class PushAck:
    """Server -> client: the events are durable at these seqs (one per pushed event)."""

    TYPE: ClassVar[str] = "push_ack"
    push_id: int = attrs.field(validator=_non_negative)
    first_client_seq: int = attrs.field(validator=_non_negative)
    seqs: tuple[int, ...]


@attrs.frozen
class ServerAhead:
    """Server -> client: other clients' events lie after your parent; catch up first."""

    TYPE: ClassVar[str] = "server_ahead"
    push_id: int = attrs.field(validator=_non_negative)
    head: int = attrs.field(validator=_non_negative)


@attrs.frozen
class PushRejected:
    """Server -> client: the batch can never be accepted as it is."""

    TYPE: ClassVar[str] = "push_rejected"
    push_id: int = attrs.field(validator=_non_negative)
    reason: str = attrs.field(converter=_clip_reason)
    #: True when the batch is fine but the server could not take it now (its storage is
    #: full or failing): retry later. False: it can never be accepted as it is.
    retryable: bool = False


# --- pull -----------------------------------------------------------------------------


@attrs.frozen
class Pull:
    """Client -> server: stream everything after ``cursor``, then stay live.

    A new Pull replaces the previous one on the same connection; ``pull_id`` lets the
    client ignore pages of a pull it has already replaced.
    """

    TYPE: ClassVar[str] = "pull"
    pull_id: int = attrs.field(validator=_non_negative)
    cursor: int = attrs.field(validator=_non_negative)


def _confirmed_batch(instance: PullPage, attribute: attrs.Attribute[Any], value: object) -> None:
    events: tuple[Event, ...] = value  # type: ignore[assignment]
    if any(event.seq is None for event in events):
        raise ValueError("pulled events must carry a seq")
    _check_contiguous_seqs(events)


@attrs.frozen
class PullPage:
    """Server -> client: consecutive events of the global log, and the server's head."""

    TYPE: ClassVar[str] = "pull_page"
    pull_id: int = attrs.field(validator=_non_negative)
    events: tuple[Event, ...] = attrs.field(validator=_confirmed_batch)
    head: int = attrs.field(validator=_non_negative)


# --- liveness -------------------------------------------------------------------------


@attrs.frozen
class Ping:
    """Client -> server: are you there?"""

    TYPE: ClassVar[str] = "ping"
    nonce: int = attrs.field(validator=_non_negative)


@attrs.frozen
class Pong:
    """Server -> client: yes, and this is my head."""

    TYPE: ClassVar[str] = "pong"
    nonce: int = attrs.field(validator=_non_negative)
    head: int = attrs.field(validator=_non_negative)


ClientMessage = Hello | Push | Pull | Ping | Error
ServerMessage = Welcome | PushAck | ServerAhead | PushRejected | PullPage | Pong | Error
#: Blob connections (files) speak their own messages (see ``_blob_messages.py``).
Message = ClientMessage | ServerMessage | BlobClientMessage | BlobServerMessage

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Error,
        Push,
        PushAck,
        ServerAhead,
        PushRejected,
        Pull,
        PullPage,
        Ping,
        Pong,
        *BLOB_MESSAGE_TYPES,
    )
}
