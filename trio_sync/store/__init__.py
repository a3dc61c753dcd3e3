"""Durable stores: the client's SQLite log and state, and the server's global log (SQLite,
or PostgreSQL for many nodes; psycopg is imported only when a PostgreSQL log is used)."""

from typing import TYPE_CHECKING, Any

from ._client_store import ClientStore, StoreSummary, inspect_store
from ._recovery import StoreRecovery, open_client_store
from ._server_log import (
    DEFAULT_STORE,
    HeadFeed,
    PushRequest,
    ServerLog,
    StoreInfo,
    open_server_log,
    store_for_target,
    valid_store_id,
)
from ._server_store import ServerStore
from ._sqlite import MEMORY, memory_path

if TYPE_CHECKING:
    from ._postgres import PostgresStore


def __getattr__(name: str) -> Any:
    # PostgresStore on first use only: its module needs psycopg, which SQLite users lack.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)


__all__ = [
    "DEFAULT_STORE",
    "MEMORY",
    "ClientStore",
    "HeadFeed",
    "PostgresStore",
    "PushRequest",
    "ServerLog",
    "ServerStore",
    "StoreInfo",
    "StoreRecovery",
    "StoreSummary",
    "inspect_store",
    "memory_path",
    "open_client_store",
    "open_server_log",
    "store_for_target",
    "valid_store_id",
]
