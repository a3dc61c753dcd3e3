"""trio_sync: a local-first event-log sync engine for Trio applications.

Each client keeps a durable event log (SQLite), commits events locally at once, pushes
them to a sync server that gives every event one global position, pulls everyone else's
events, and rebases its pending events when upstream moved on.
"""

from ._errors import (
    ClientClosed,
    ConnectError,
    ConnectionClosed,
    HandshakeRefused,
    IncompatibleServer,
    InvalidDatabase,
    InvalidEvent,
    InvalidMessage,
    InvalidURL,
    MalformedFrame,
    ProtocolError,
    ResetRefused,
    StoreClosed,
    StoreCorrupt,
    StoreDamaged,
    StoreError,
    StoreFull,
    StoreHasOtherNames,
    StoreInUse,
    StoreMismatch,
    StoreReadOnly,
    StoreVersionError,
    TokenUnavailable,
    TransportError,
    TrioSyncError,
)
from .client import Client, ClientTimings, open_client
from .protocol import CatchUpProgress, Event, HeartbeatTimings, PushTimings, SyncState, SyncStatus
from .server import Server, serve

__version__ = "0.1.0"

__all__ = [
    "CatchUpProgress",
    "Client",
    "ClientClosed",
    "ClientTimings",
    "ConnectError",
    "ConnectionClosed",
    "Event",
    "HandshakeRefused",
    "HeartbeatTimings",
    "IncompatibleServer",
    "InvalidDatabase",
    "InvalidEvent",
    "InvalidMessage",
    "InvalidURL",
    "MalformedFrame",
    "ProtocolError",
    "PushTimings",
    "ResetRefused",
    "Server",
    "StoreClosed",
    "StoreCorrupt",
    "StoreDamaged",
    "StoreError",
    "StoreFull",
    "StoreHasOtherNames",
    "StoreInUse",
    "StoreMismatch",
    "StoreReadOnly",
    "StoreVersionError",
    "SyncState",
    "SyncStatus",
    "TokenUnavailable",
    "TransportError",
    "TrioSyncError",
    "open_client",
    "serve",
]
