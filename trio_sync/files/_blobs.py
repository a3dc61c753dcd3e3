"""Content-addressed blob stores: one blob per SHA-256 hash, written whole or not at all.

The same interface serves the client (its local copies) and the server (one store per
sync store, see ``server/_blobs.py``). Methods are synchronous, like the SQLite stores: the
runtime runs them in a worker thread, the simulator inline.

A blob appears under its hash only once its bytes are complete, checked against the hash
and (on disk) fsynced: it is written under a temporary name, or appended to as a *partial*
(an upload or download that can resume where it stopped), then renamed. Identical
contents are stored once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from .._errors import StoreError, StoreFull
from ._bulk import check_stop
from ._source import COPY_BLOCK, copy_source

#: Called with the name of an operation before it writes (tests inject ENOSPC here).
FaultHook = Callable[[str], None]
#: Seconds since the epoch, as the store's files are stamped (``time.time``; tests inject).
WallClock = Callable[[], float]
#: A stored blob's size and a stamp that changes whenever the blob is written again (a
#: file's mtime in nanoseconds): what a "this blob was verified" fact is keyed by.
Fingerprint = tuple[int, int]


def utc_stamp(when: float) -> str:
    """``when`` (seconds since the epoch) as a compact UTC time: ``20250131T120000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))


#: A blob being written is synced to disk every this many bytes (see :func:`_write_back`).
SYNC_EVERY = 4 * 1024 * 1024


def _write_back(fd: int, offset: int, length: int) -> None:
    """Pushes the ``length`` bytes just written at ``offset`` towards the disk: starts their
    writeback at once (Linux: ``POSIX_FADV_DONTNEED`` starts it for dirty pages, then drops
    the range's clean pages from the cache), and waits for it (``fdatasync``) each time
    the file crosses a multiple of :data:`SYNC_EVERY`.

    Why: a transfer otherwise leaves the whole file dirty in memory until the fsync that
    publishes it, which then writes tens of megabytes at once, and every SQLite commit
    (the event sync's) waits behind that burst in the disk's queue. Written as it arrives,
    the backlog in front of a commit stays at a few megabytes; the disk writes the same
    bytes either way, before the blob is published.

    Raises:
        OSError: The sync failed (a full disk, an I/O error).
    """
    if _FADVISE is not None:
        with contextlib.suppress(OSError):
            _FADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)
    if (offset + length) // SYNC_EVERY != offset // SYNC_EVERY:
        _DATASYNC(fd)


_FADVISE = getattr(os, "posix_fadvise", None)
_DATASYNC = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_and_hash(blobs: BlobStore, content_hash: str) -> tuple[bytes, str]:
    """The blob ``content_hash`` and the SHA-256 of what was read (run in a thread: 50 MB
    would take the event loop's time).

    Raises:
        KeyError: No such blob.
        StoreError: It cannot be read.
    """
    data = blobs.read(content_hash)
    return data, sha256_hex(data)


class BlobStore(Protocol):
    """Where blobs live (a directory, memory, or an object store)."""

    def has(self, content_hash: str) -> bool:
        """True when the whole blob is stored."""

    def size(self, content_hash: str) -> int | None:
        """The stored blob's size (None when it is not stored whole)."""

    def put(self, source: bytes | Path, *, stop: threading.Event | None = None) -> tuple[str, int]:
        """Stores ``source`` (bytes, or a file copied in blocks, which must not change
        meanwhile: see :func:`copy_source`) and returns its hash and size.

        ``stop``: set by another thread to give the copy up (see ``_bulk.py``); it is
        checked between blocks.

        Raises:
            StoreFull: No room left; nothing was stored.
            StoreError: Another I/O error (the source cannot be read, or is not a regular
                file), or the source changed while it was copied; nothing was stored.
            Stopped: ``stop`` was set; nothing was stored.
        """
        ...

    def partial_size(self, content_hash: str) -> int:
        """How many bytes of an unfinished transfer of ``content_hash`` are held."""
        ...

    def append_partial(self, content_hash: str, offset: int, data: bytes) -> None:
        """Adds ``data`` at ``offset``, which must be :meth:`partial_size`.

        Raises:
            ValueError: ``offset`` is not where the partial ends.
            StoreFull, StoreError: The write failed (the partial keeps what it had).
        """

    def finish_partial(self, content_hash: str, *, digest: str | None = None) -> bool:
        """Checks the partial against its hash and publishes it: True, or False when the
        bytes do not match (the partial is then discarded).

        ``digest``: the SHA-256 of every byte of the partial, computed by the caller as it
        appended them (see ``_chunks.py``); the partial is then not read back to hash it.

        Raises:
            StoreFull, StoreError: The write failed.
        """
        ...

    def discard_partial(self, content_hash: str) -> None:
        """Deletes the partial transfer of ``content_hash`` (none: nothing happens).

        Raises:
            StoreError: The deletion failed.
        """
        ...

    def read(self, content_hash: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a stored blob.

        Raises:
            KeyError: It is not stored.
        """
        ...

    def local_path(self, content_hash: str) -> Path | None:
        """Where the blob is on disk (None when not stored, or not on a disk)."""

    def delete(self, content_hash: str) -> None:
        """Deletes a stored blob (none: nothing happens).

        Raises:
            StoreError: The deletion failed.
        """
        ...

    def hashes(self) -> list[str]:
        """Every stored blob's hash, sorted.

        Raises:
            StoreError: The store cannot be listed.
        """
        ...


@attrs.frozen
class StoreUsage:
    """What a blob store holds.

    Attributes:
        blob_bytes: The bytes of every stored (published) blob.
        partials: The bytes held of each unfinished transfer, by content hash.
    """

    blob_bytes: int
    partials: Mapping[str, int]

    @property
    def total(self) -> int:
        return self.blob_bytes + sum(self.partials.values())


class ServerBlobStore(BlobStore, Protocol):
    """A server's blob store: a :class:`BlobStore` that can also say how much it holds
    (the quota, see ``server/_blob_upkeep.py``)."""

    def usage(self) -> StoreUsage:
        """The bytes of the stored blobs and of each partial (one pass over the store).

        Raises:
            StoreError: The store cannot be listed.
        """
        ...

    def partials(self) -> dict[str, int]:
        """The bytes held of each partial (one pass over the partials only: what an upload
        begin lists, see ``server/_store_measure.py``).

        Raises:
            StoreError: The store cannot be listed.
        """
        ...

    def expire_partials(self, max_age: float, keep: Collection[str] = ()) -> list[str]:
        """Deletes the partials last written more than ``max_age`` seconds ago (by the
        store's own clock), except those of ``keep``; returns their hashes.

        Raises:
            StoreError: The store cannot be listed.
        """
        ...

    def touch(self, content_hash: str) -> None:
        """Restarts the stored blob's age (for :meth:`delete_unreferenced`); nothing when it
        is not stored."""
        ...

    def delete_unreferenced(self, keep: Collection[str], min_age: float) -> list[tuple[str, int]]:
        """Deletes the stored blobs not in ``keep`` that were stored more than ``min_age``
        seconds ago (by the store's own clock); returns each one's hash and size.

        Raises:
            StoreError: The store cannot be listed.
        """
        ...

    def fingerprint(self, content_hash: str) -> Fingerprint | None:
        """The stored blob's size and write stamp (None when it is not stored)."""
        ...

    def quarantine(self, content_hash: str, *, expect: Fingerprint | None = None) -> str | None:
        """Moves a stored blob aside (it does not match its hash): it reads as missing
        from then on, and its bytes are kept for a person to look at. Returns the name it
        was kept under (``<hash>.<UTC time>``), or None when it is not stored, or its
        fingerprint is no longer ``expect`` (written again meanwhile: left alone).

        Raises:
            StoreError: The move failed.
        """
        ...


def _os_error(what: str, exc: OSError) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"blob store: the disk is full while {what}: {exc.strerror or exc}")
    return StoreError(f"blob store: {what} failed: {exc.strerror or exc}")


def _unlink(path: Path, what: str) -> None:
    """Deletes ``path``; one already gone is fine.

    Raises:
        StoreError: Any other failure (named by ``what``).
    """
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _os_error(what, exc) from None


class FileBlobStore:
    """Blobs as files in a directory: ``blobs/<hash>``, ``partial/<hash>``, ``tmp/``, and
    ``corrupt/<hash>.<UTC time>`` for blobs moved aside (:meth:`quarantine`).

    ``clock``: the time a partial's age is measured against (its files' mtimes are
    stamped by the same wall clock).
    """

    def __init__(
        self, root: str | Path, *, fault: FaultHook | None = None, clock: WallClock = time.time
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        self._blobs = self.root / "blobs"
        self._partial = self.root / "partial"
        self._tmp = self.root / "tmp"
        self._corrupt = self.root / "corrupt"
        self.fault = fault
        try:
            for folder in (self._blobs, self._partial, self._tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(f"creating {self.root}", exc) from None
        # Temporary files of a crashed run are garbage.
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _fault(self, what: str) -> None:
        if self.fault is not None:
            self.fault(what)

    def has(self, content_hash: str) -> bool:
        return (self._blobs / content_hash).exists()

    def size(self, content_hash: str) -> int | None:
        try:
            return (self._blobs / content_hash).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, source: bytes | Path, *, stop: threading.Event | None = None) -> tuple[str, int]:
        tmp = self._tmp / uuid.uuid4().hex
        try:
            self._fault("put")
            check_stop(stop)
            with open(tmp, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                    content_hash, size = sha256_hex(source), len(source)
                else:

                    def write(block: bytes, offset: int) -> None:
                        out.write(block)
                        out.flush()
                        _write_back(out.fileno(), offset, len(block))

                    content_hash, size = copy_source(source, write, stop)
                check_stop(stop)  # before the fsync, which can take a while
                out.flush()
                os.fsync(out.fileno())
            self._publish(tmp, content_hash)
        except BaseException as exc:
            # Whatever ended it (a full disk, a changed source, a stop), the bytes
            # written so far are no blob.
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise _os_error("storing a blob", exc) from None
            raise
        return content_hash, size

    def _publish(self, source: Path, content_hash: str) -> None:
        target = self._blobs / content_hash
        if target.exists():
            source.unlink()  # the same contents are stored already
            return
        os.replace(source, target)
        fd = os.open(self._blobs, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power loss
        finally:
            os.close(fd)

    def partial_size(self, content_hash: str) -> int:
        try:
            return (self._partial / content_hash).stat().st_size
        except FileNotFoundError:
            return 0

    def append_partial(self, content_hash: str, offset: int, data: bytes) -> None:
        path = self._partial / content_hash
        try:
            self._fault("append")
            with open(path, "ab") as out:
                if out.tell() != offset:
                    raise ValueError(f"partial holds {out.tell()} bytes, not {offset}")
                try:
                    out.write(data)
                    out.flush()
                    _write_back(out.fileno(), offset, len(data))
                except OSError:
                    # Keep the partial whole up to a chunk boundary.
                    out.truncate(offset)
                    raise
        except OSError as exc:
            raise _os_error("writing a chunk", exc) from None

    def finish_partial(self, content_hash: str, *, digest: str | None = None) -> bool:
        path = self._partial / content_hash
        try:
            self._fault("finish")
            with open(path, "ab+") as part:  # created if missing: an empty blob has none
                if digest is None:
                    hasher = hashlib.sha256()
                    part.seek(0)
                    while block := part.read(COPY_BLOCK):
                        hasher.update(block)
                    digest = hasher.hexdigest()
                if digest != content_hash:
                    matches = False
                else:
                    os.fsync(part.fileno())
                    matches = True
            if not matches:
                path.unlink()
                return False
            self._publish(path, content_hash)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error("publishing a blob", exc) from None
        return True

    def discard_partial(self, content_hash: str) -> None:
        _unlink(self._partial / content_hash, "deleting a partial download")

    def read(self, content_hash: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._blobs / content_hash, "rb") as blob:
                blob.seek(offset)
                return blob.read(-1 if length is None else length)
        except FileNotFoundError:
            raise KeyError(content_hash) from None
        except OSError as exc:
            raise _os_error("reading a blob", exc) from None

    def local_path(self, content_hash: str) -> Path | None:
        path = self._blobs / content_hash
        return path if path.exists() else None

    def delete(self, content_hash: str) -> None:
        _unlink(self._blobs / content_hash, "deleting a blob")

    def hashes(self) -> list[str]:
        try:
            return sorted(path.name for path in self._blobs.iterdir())
        except OSError as exc:
            raise _os_error("listing the blobs", exc) from None

    def usage(self) -> StoreUsage:
        try:
            blob_bytes = sum(_sizes(self._blobs).values())
            partials = _sizes(self._partial)
        except OSError as exc:
            raise _os_error("listing the store", exc) from None
        return StoreUsage(blob_bytes, partials)

    def partials(self) -> dict[str, int]:
        try:
            return _sizes(self._partial)
        except OSError as exc:
            raise _os_error("listing the partial uploads", exc) from None

    def expire_partials(self, max_age: float, keep: Collection[str] = ()) -> list[str]:
        expired = self._delete_older(self._partial, keep, max_age, "expiring partial transfers")
        return [name for name, _ in expired]

    def touch(self, content_hash: str) -> None:
        now = self.clock()
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._blobs / content_hash, (now, now))

    def delete_unreferenced(self, keep: Collection[str], min_age: float) -> list[tuple[str, int]]:
        return self._delete_older(self._blobs, keep, min_age, "deleting unreferenced blobs")

    def _delete_older(
        self, folder: Path, keep: Collection[str], age: float, what: str
    ) -> list[tuple[str, int]]:
        """Deletes the files of ``folder`` not in ``keep`` last written more than ``age``
        seconds ago (by :attr:`clock`); returns each one's name and size, sorted."""
        older_than = self.clock() - age
        deleted = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name in keep:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        stat = entry.stat()
                        if stat.st_mtime < older_than:
                            os.unlink(entry.path)
                            deleted.append((entry.name, stat.st_size))
        except OSError as exc:
            raise _os_error(what, exc) from None
        return sorted(deleted)

    def fingerprint(self, content_hash: str) -> Fingerprint | None:
        try:
            stat = (self._blobs / content_hash).stat()
        except FileNotFoundError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def quarantine(self, content_hash: str, *, expect: Fingerprint | None = None) -> str | None:
        if expect is not None and self.fingerprint(content_hash) != expect:
            return None
        stamp = utc_stamp(self.clock())
        try:
            self._corrupt.mkdir(exist_ok=True)
            name = f"{content_hash}.{stamp}"
            for n in itertools.count(1):
                if not (self._corrupt / name).exists():
                    break
                name = f"{content_hash}.{stamp}.{n}"
            os.replace(self._blobs / content_hash, self._corrupt / name)
            fd = os.open(self._blobs, os.O_RDONLY)
            try:
                os.fsync(fd)  # the blob stays gone after a power loss
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error("moving a corrupt blob aside", exc) from None
        return name


def _sizes(folder: Path) -> dict[str, int]:
    """The size of each file in ``folder`` (one that goes away meanwhile is left out)."""
    sizes = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                sizes[entry.name] = entry.stat().st_size
    return sizes
