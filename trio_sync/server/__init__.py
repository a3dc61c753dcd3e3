"""The sync server runtime: ``serve()`` on WebSockets, one nursery per connection."""

from ._blob_backends import BlobBackend, BlobLimits, FileBlobBackend, MemoryBlobBackend
from ._hub import Hub, HubConfig
from ._limits import ServerLimits
from ._log import StoreLog
from ._metrics import ServerMetrics
from ._process import tune_process
from ._serve import Listen, Server, serve, serve_hub, serve_store
from ._session import ServerSession

__all__ = [
    "BlobBackend",
    "BlobLimits",
    "FileBlobBackend",
    "Hub",
    "HubConfig",
    "Listen",
    "MemoryBlobBackend",
    "Server",
    "ServerLimits",
    "ServerMetrics",
    "ServerSession",
    "StoreLog",
    "serve",
    "serve_hub",
    "serve_store",
    "tune_process",
]
