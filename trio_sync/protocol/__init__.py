"""The sans-IO core: events, wire messages and every sync decision, as pure code.

Nothing in this package does I/O, reads a clock or draws random numbers: time and jitter
are passed in. The runtimes in ``client/`` and ``server/`` move bytes and call this.
"""

from ._backoff import backoff_delay
from ._codec import MAX_FRAME_BYTES, decode, encode
from ._events import Event, new_event
from ._handshake import hello_problem, welcome_problem
from ._heartbeat import (
    ConnectionDead,
    Heartbeat,
    HeartbeatAction,
    HeartbeatTimings,
    KickPush,
    RestartPull,
    SendPing,
)
from ._messages import (
    PROTOCOL_VERSION,
    ClientMessage,
    Error,
    Hello,
    Message,
    Ping,
    Pong,
    Pull,
    PullPage,
    Push,
    PushAck,
    PushRejected,
    ServerAhead,
    ServerMessage,
    Welcome,
)
from ._push import (
    PUSH_POLICIES,
    CatchUp,
    ParkingPush,
    PushAction,
    PushMachine,
    PushTimings,
    SendPush,
    Sleep,
    SupervisedPush,
    make_push_machine,
)
from ._server_rules import Accept, Ahead, PushDecision, PushFacts, Reject, decide_push
from ._state import Advance, MergeResult, PushPlan, Rebase, Refused, SyncState
from ._status import ConnectionPhase, StatusState, SyncStatus, derive_status

__all__ = [
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "PUSH_POLICIES",
    "Accept",
    "Advance",
    "Ahead",
    "CatchUp",
    "ClientMessage",
    "ConnectionDead",
    "ConnectionPhase",
    "Error",
    "Event",
    "Heartbeat",
    "HeartbeatAction",
    "HeartbeatTimings",
    "Hello",
    "KickPush",
    "MergeResult",
    "Message",
    "ParkingPush",
    "Ping",
    "Pong",
    "Pull",
    "PullPage",
    "Push",
    "PushAck",
    "PushAction",
    "PushDecision",
    "PushFacts",
    "PushMachine",
    "PushPlan",
    "PushRejected",
    "PushTimings",
    "Rebase",
    "Refused",
    "Reject",
    "RestartPull",
    "SendPing",
    "SendPush",
    "ServerAhead",
    "ServerMessage",
    "Sleep",
    "StatusState",
    "SupervisedPush",
    "SyncState",
    "SyncStatus",
    "Welcome",
    "backoff_delay",
    "decide_push",
    "decode",
    "derive_status",
    "encode",
    "hello_problem",
    "make_push_machine",
    "new_event",
    "welcome_problem",
]
