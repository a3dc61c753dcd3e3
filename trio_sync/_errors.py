"""The exceptions trio_sync raises.

Every failure a user can see is one of these: library exceptions (sqlite3, trio-websocket,
wsproto, cattrs, json) are translated where they happen, so ``except TrioSyncError`` is
enough to catch everything this library decides to raise.

This module is pure (no trio, no sqlite3), so the sans-IO core can raise these too.
"""

from __future__ import annotations


class TrioSyncError(Exception):
    """Base class for every error trio_sync raises."""


# --- protocol -------------------------------------------------------------------------


class ProtocolError(TrioSyncError):
    """A peer sent something the protocol does not allow."""


class MalformedFrame(ProtocolError):
    """A frame could not be decoded at all (not JSON, not text, not an object)."""


class InvalidMessage(ProtocolError):
    """A frame decoded, but is not a valid message (unknown type, wrong or missing fields)."""


class InvalidEvent(TrioSyncError, ValueError):
    """An event given to ``commit()`` cannot be stored (bad name, args not JSON)."""


# --- store ----------------------------------------------------------------------------


class StoreError(TrioSyncError):
    """The durable store cannot be used."""


class StoreInUse(StoreError):
    """Another process (or another open handle) already has this store open."""


class StoreCorrupt(StoreError):
    """The store file is damaged or is not a trio_sync store."""


class StoreDamaged(StoreCorrupt):
    """The store file is damaged: SQLite's integrity check fails, or its log breaks an
    invariant (a gap in the positions). A client store is moved aside and rebuilt; a
    server refuses to start on it."""


class StoreFull(StoreError):
    """The disk (or the database's size limit) is full: nothing was written. Retry later."""


class StoreHasOtherNames(StoreError):
    """The store's file has more than one name (a hard link): refused, because SQLite
    keeps the write-ahead log, and trio_sync its lock, beside the name a store is opened
    by. The message says which name to keep.

    Attributes:
        others: The other names found in the file's folder (names in other folders
            cannot be found cheaply; the message says how many there are).
    """

    def __init__(self, message: str, *, others: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.others = others


class StoreReadOnly(StoreError):
    """The store's file or folder cannot be written."""


class StoreVersionError(StoreError):
    """The store was written by a newer trio_sync whose schema this one does not know."""


class StoreClosed(StoreError):
    """The store was used after it was closed (its owner is shutting down)."""


class StoreMismatch(StoreError):
    """The store belongs to a different client or server than the one asked for."""


class InvalidDatabase(StoreError, ValueError):
    """A server log's name that can never work: a URL of another scheme than
    ``postgresql://`` (``sqlite:///x``, ``postgresql+psycopg://...``) or a libpq
    ``key=value`` string. Refused rather than taken for a SQLite file name."""


# --- transport and sync ---------------------------------------------------------------


class TransportError(TrioSyncError):
    """The connection to the peer failed."""


class ConnectError(TransportError):
    """Could not open a connection to the server."""


class TokenUnavailable(ConnectError):
    """The token function failed, took too long, or returned something that is not a
    token: no connection was tried (the client tries again later, like any failure)."""


class HandshakeRefused(ConnectError):
    """Something answered at the server's address but refused the WebSocket handshake (an
    HTTP reply such as a proxy's 404, or a closed handshake)."""


class ResetRefused(TrioSyncError):
    """``Client.reset()`` was called on a client the server still syncs with."""


class InvalidURL(TrioSyncError, ValueError):
    """A server URL that can never work (not ``ws://`` or ``wss://``, no host, a bad
    port): refused at once instead of retried for ever."""


class ConnectionClosed(TransportError):
    """The connection was closed (by either side, or by the network)."""


class IncompatibleServer(TrioSyncError):
    """The server cannot sync with this client (other schema, or its database was rebuilt)."""


class ClientClosed(TrioSyncError):
    """The client was used after its ``open_client`` block exited."""
