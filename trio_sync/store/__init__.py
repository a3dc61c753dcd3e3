"""Durable SQLite stores: the client's log and state, and the server's global log."""

from ._client_store import ClientStore, StoreSummary, inspect_store
from ._recovery import StoreRecovery, open_client_store
from ._server_store import DEFAULT_STORE, PushRequest, ServerStore, StoreInfo, valid_store_id
from ._sqlite import MEMORY, memory_path

__all__ = [
    "DEFAULT_STORE",
    "MEMORY",
    "ClientStore",
    "PushRequest",
    "ServerStore",
    "StoreInfo",
    "StoreRecovery",
    "StoreSummary",
    "inspect_store",
    "memory_path",
    "open_client_store",
    "valid_store_id",
]
