"""File sync: facts as events, contents as content-addressed blobs, local transfer state.

See docs/files.md. ``client.files`` is a :class:`FileSync`.
"""

from ._api import FileSync
from ._blobs import BlobStore, FileBlobStore
from ._errors import FileNotFound, FileSyncError, FileTransferError
from ._executor import TransferExecutor
from ._memory_blobs import MemoryBlobStore
from ._model import FileInfo, FileState, TransferState
from ._options import FileOptions
from ._pacing import PacingPolicy, TransferPacer
from ._queue import ProgressThrottle, RetryPolicy, StuckQueueWatch, TransferQueue

__all__ = [
    "BlobStore",
    "FileBlobStore",
    "FileInfo",
    "FileNotFound",
    "FileOptions",
    "FileState",
    "FileSync",
    "FileSyncError",
    "FileTransferError",
    "MemoryBlobStore",
    "PacingPolicy",
    "ProgressThrottle",
    "RetryPolicy",
    "StuckQueueWatch",
    "TransferExecutor",
    "TransferPacer",
    "TransferQueue",
    "TransferState",
]
