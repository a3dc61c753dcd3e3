"""The sync server runtime: ``serve()`` on trio-websocket, one nursery per connection."""

from ._log import ServerLog
from ._serve import Server, serve
from ._session import ServerConfig, ServerSession

__all__ = ["Server", "ServerConfig", "ServerLog", "ServerSession", "serve"]
