"""Size limits on what crosses the wire, shared by both peers.

The server chooses its limits and announces them in its welcome; a client then refuses, at
``commit()``, an event the server would refuse, and never builds a push or expects a page
larger than the server allows. A limit a peer breaks is refused with an error naming it.
"""

from __future__ import annotations

import attrs

from .._checks import positive_int

#: No frame is ever larger than this, whatever a server announces (a client's own bound).
HARD_MAX_FRAME_BYTES = 64 * 1024 * 1024
#: No args nest deeper than this, whatever a server announces.
HARD_MAX_DEPTH = 64
#: What a stored event costs on the wire beyond its name and args (ids, positions, keys),
#: with room for a client id of 128 four-byte characters.
EVENT_ENVELOPE_BYTES = 640
#: What a pull page or push costs beyond its events.
MESSAGE_ENVELOPE_BYTES = 256
#: Longest event name, client id and store id accepted (in characters).
MAX_NAME_LENGTH = 256
MAX_CLIENT_ID_LENGTH = 128
MAX_STORE_ID_LENGTH = 64
#: Longest token, schema name, server id and error reason accepted (in characters).
MAX_TOKEN_LENGTH = 4096
MAX_LABEL_LENGTH = 128
MAX_REASON_LENGTH = 2000


@attrs.frozen
class WireLimits:
    """What one peer accepts from the other.

    Attributes:
        max_frame_bytes: The largest frame (one message), in bytes.
        max_event_bytes: The largest event: its name plus its args as compact UTF-8 JSON.
        max_push_events: The most events in one push.
        max_depth: How deeply an event's args may nest objects and arrays.
    """

    max_frame_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=positive_int)
    max_event_bytes: int = attrs.field(default=1024 * 1024, validator=positive_int)
    max_push_events: int = attrs.field(default=1000, validator=positive_int)
    max_depth: int = attrs.field(default=32, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        if self.max_frame_bytes > HARD_MAX_FRAME_BYTES:
            raise ValueError(f"max_frame_bytes may be at most {HARD_MAX_FRAME_BYTES}")
        if self.max_depth > HARD_MAX_DEPTH:
            raise ValueError(f"max_depth may be at most {HARD_MAX_DEPTH}")
        if self.max_event_bytes + EVENT_ENVELOPE_BYTES + MESSAGE_ENVELOPE_BYTES > (
            self.max_frame_bytes
        ):
            raise ValueError(
                f"max_event_bytes {self.max_event_bytes} leaves no room in a frame of "
                f"max_frame_bytes {self.max_frame_bytes}: an accepted event could never be "
                "sent to another client"
            )

    def narrowed_by(self, other: WireLimits) -> WireLimits:
        """The limits that satisfy both this peer and ``other`` (the smaller of each)."""
        return WireLimits(
            max_frame_bytes=min(self.max_frame_bytes, other.max_frame_bytes),
            max_event_bytes=min(self.max_event_bytes, other.max_event_bytes),
            max_push_events=min(self.max_push_events, other.max_push_events),
            max_depth=min(self.max_depth, other.max_depth),
        )

    def push_bytes_budget(self) -> int:
        """How many bytes of events (name + args) one push may carry."""
        return self.max_frame_bytes - MESSAGE_ENVELOPE_BYTES


DEFAULT_LIMITS = WireLimits()
#: What a client accepts from any server: the hard frame bound, the default rest.
CLIENT_RECEIVE_LIMITS = WireLimits(
    max_frame_bytes=HARD_MAX_FRAME_BYTES,
    max_event_bytes=HARD_MAX_FRAME_BYTES - EVENT_ENVELOPE_BYTES - MESSAGE_ENVELOPE_BYTES,
    max_push_events=1_000_000,
    max_depth=HARD_MAX_DEPTH,
)
