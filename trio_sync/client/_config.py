"""Client timing parameters."""

from __future__ import annotations

import attrs

from ..protocol import HeartbeatTimings, PushTimings


@attrs.frozen
class ClientTimings:
    """Every duration a client waits for, in seconds.

    The defaults suit a real network; the simulator and the tests pass shorter ones.
    """

    #: Opening the transport connection.
    connect_timeout: float = 10.0
    #: Waiting for the server's welcome after saying hello.
    handshake_timeout: float = 10.0
    #: Reconnection backoff: first and largest step (jittered, capped, exponential).
    reconnect_base: float = 0.1
    reconnect_cap: float = 10.0
    #: A connection that stayed up this long resets the reconnection backoff.
    stable_connection: float = 2.0
    heartbeat: HeartbeatTimings = attrs.field(factory=HeartbeatTimings)
    push: PushTimings = attrs.field(factory=PushTimings)
