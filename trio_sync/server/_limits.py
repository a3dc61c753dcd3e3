"""Every limit a server enforces, in one place, each with the name its refusals use."""

from __future__ import annotations

from typing import Any

import attrs

from ..protocol import EVENT_ENVELOPE_BYTES, MESSAGE_ENVELOPE_BYTES, WireLimits

MiB = 1024 * 1024


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class ServerLimits:
    """What one server accepts. A refusal names the limit it hit, by these names.

    Attributes:
        wire: Frame size, event size, events per push and args depth (announced to
            clients in the welcome, so they refuse bigger events at ``commit()``).
        max_page_bytes: The largest pull page. Always room for one maximal event, and
            never more than a frame: any accepted event can be sent to anyone.
        max_page_events: The most events in one pull page.
        max_tail_bytes: Memory (estimated) of recent events kept for live pullers, over
            all stores (older events are read from the database).
        max_connections: Open connections in total (past it, 503 and close).
        max_connections_per_store: Connections to one store.
        max_stores: Stores the server holds in all: past it, creating another (with
            ``create_stores``) is refused.
        hello_timeout: Seconds a new connection has for TLS, the WebSocket handshake and
            its hello.
        idle_timeout: Seconds a connection may send nothing (clients ping every 5 s).
        messages_per_second: Messages read from one connection per second on average
            (a pull counts as 100, and every 4 KiB received as one more); a faster client
            is slowed down, not refused (its other messages wait).
        message_burst: Messages one connection may send back to back before that.
        send_timeout: Seconds a send to a client may wait (it does not read) before the
            client counts as too slow and is dropped; it reconnects and catches up.
    """

    wire: WireLimits = attrs.field(factory=WireLimits)
    max_page_bytes: int = attrs.field(default=MiB + 64 * 1024, validator=_positive)
    max_page_events: int = attrs.field(default=5000, validator=_positive)
    max_tail_bytes: int = attrs.field(default=64 * MiB, validator=_positive)
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    max_connections_per_store: int = attrs.field(default=5_000, validator=_positive)
    max_stores: int = attrs.field(default=10_000, validator=_positive)
    hello_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    messages_per_second: float = attrs.field(default=1000.0, validator=_positive)
    message_burst: int = attrs.field(default=2000, validator=_positive)
    send_timeout: float = attrs.field(default=30.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        smallest = self.wire.max_event_bytes + EVENT_ENVELOPE_BYTES + MESSAGE_ENVELOPE_BYTES
        if not smallest <= self.max_page_bytes <= self.wire.max_frame_bytes:
            raise ValueError(
                f"max_page_bytes must lie between {smallest} (one maximal event) and "
                f"max_frame_bytes {self.wire.max_frame_bytes}, got {self.max_page_bytes}"
            )

    @property
    def page_events_budget(self) -> int:
        """Bytes of events one page may carry."""
        return self.max_page_bytes - MESSAGE_ENVELOPE_BYTES
