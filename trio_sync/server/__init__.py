"""The sync server runtime: ``serve()`` on trio-websocket, one nursery per connection."""

from ._log import ServerLog
from ._serve import Listen, Server, serve, serve_store
from ._session import ServerConfig, ServerSession

__all__ = ["Listen", "Server", "ServerConfig", "ServerLog", "ServerSession", "serve", "serve_store"]
