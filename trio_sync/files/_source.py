"""The application's file that ``save(Path)`` copies from: opened, copied in blocks, and
refused if it changed meanwhile (a torn copy would be stored as contents it never had).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .._errors import StoreError
from ._bulk import check_stop

#: Bytes read from a source or a blob at a time when copying or hashing.
COPY_BLOCK = 1024 * 1024


def _open_source(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Opens a file to copy contents from, and returns it with its ``fstat`` when opened
    (how many bytes to copy, and what :func:`copy_source` compares with once it is copied).
    Opened without blocking, so that something else swapped in for it since it was
    checked (a FIFO with no writer) is refused instead of waited on for ever.

    Raises:
        OSError: It cannot be opened, or is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file: {str(path)!r}")
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def _version(info: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written, truncated, or replaced by another one."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _read_and_hash(
    src: BinaryIO,
    size: int,
    stop: threading.Event | None,
    write: Callable[[bytes, int], None] | None = None,
) -> tuple[str, int]:
    """Reads up to ``size`` bytes of ``src`` in blocks (each handed to ``write``);
    returns their SHA-256 and how many were read (fewer: the file was truncated)."""
    digest = hashlib.sha256()
    done = 0
    while done < size:
        check_stop(stop)
        block = src.read(min(COPY_BLOCK, size - done))
        if not block:
            break
        digest.update(block)
        if write is not None:
            write(block, done)
        done += len(block)
    return digest.hexdigest(), done


def _unchanged(path: Path, src: BinaryIO, opened: os.stat_result) -> bool:
    """Whether the file ``src`` (opened as ``opened``) is still the one at ``path``, of
    the same size and last written at the same time."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False  # deleted or renamed away meanwhile
    return _version(os.fstat(src.fileno())) == _version(now) == _version(opened)


def copy_source(
    path: Path, write: Callable[[bytes, int], None], stop: threading.Event | None = None
) -> tuple[str, int]:
    """Copies the regular file at ``path`` in blocks of :data:`COPY_BLOCK`, handing each
    to ``write(block, offset)``, and returns its SHA-256 and size.

    The file must not change while it is copied: a copy of a file rewritten meanwhile
    mixes old and new bytes, of one truncated stops short, and either would be stored as
    contents the file never had. So its ``fstat`` once copied (and the ``stat`` of
    ``path``, in case another file was renamed over it) must match the one taken when it
    was opened (device, inode, size, mtime), and every byte it had then must have been
    read. When only its ctime moved (a chmod, a new hard link, an extended attribute, or
    a write whose mtime was set back), the file is read again: the copy stands if the
    file holds the same bytes now. A file that grows while it is copied (a log) is
    refused: an append cannot be told from a rewrite.

    Raises:
        OSError: It cannot be opened or read, or is not a regular file.
        StoreError: It changed while it was copied (nothing ``write`` was given counts).
        Stopped: ``stop`` was set (checked between blocks).
    """
    src, opened = _open_source(path)
    with src:
        digest, size = _read_and_hash(src, opened.st_size, stop, write)
        same = size == opened.st_size and _unchanged(path, src, opened)
        if same and os.fstat(src.fileno()).st_ctime_ns != opened.st_ctime_ns:
            src.seek(0)
            again = _read_and_hash(src, size + 1, stop)  # one byte more: grown?
            same = again == (digest, size) and _unchanged(path, src, opened)
    if not same:
        raise StoreError(
            f"blob store: {str(path)!r} changed while it was copied (nothing was stored): "
            "save it again once nothing writes to it"
        )
    return digest, size


def source_size(path: Path) -> int:
    """The size of the regular file ``path`` names (``save()`` checks it first).

    Raises:
        FileNotFoundError: There is none: nothing there, or a directory, a FIFO, a device
            (the message says which).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file to copy at {str(path)!r}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileNotFoundError(f"{str(path)!r} is a directory, not a file to copy")
    if not stat.S_ISREG(info.st_mode):
        raise FileNotFoundError(f"{str(path)!r} is not a regular file: nothing to copy")
    return info.st_size
