"""Durable SQLite stores: the client's log and state, and the server's global log."""

from ._client_store import ClientStore
from ._server_store import ServerStore
from ._sqlite import MEMORY, memory_path

__all__ = ["MEMORY", "ClientStore", "ServerStore", "memory_path"]
