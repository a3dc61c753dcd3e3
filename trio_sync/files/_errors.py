"""The file sync's errors: one base, and what each operation can raise beyond it."""

from __future__ import annotations

from .._errors import TrioSyncError


class FileSyncError(TrioSyncError):
    """A file operation failed."""


class FileNotFound(FileSyncError, KeyError):
    """No such file (or it was deleted)."""


class FileTransferError(FileSyncError):
    """A file's contents could not be fetched: the retries are exhausted, or the only
    copy rotted before it was uploaded."""
