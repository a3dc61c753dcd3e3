"""Blobs in memory: the blob store of the simulator and of tests, behaving as the one on
disk does (temporary names aside), with the same faults injectable."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Collection
from pathlib import Path

from ._blobs import (
    FaultHook,
    Fingerprint,
    StoreUsage,
    WallClock,
    _os_error,
    sha256_hex,
    utc_stamp,
)
from ._bulk import check_stop
from ._source import copy_source


class MemoryBlobStore:
    """Blobs in memory (the simulator, tests): the same behaviour, no disk."""

    def __init__(self, *, fault: FaultHook | None = None, clock: WallClock = time.time) -> None:
        self._blobs: dict[str, bytes] = {}
        self._partial: dict[str, bytearray] = {}
        #: When each partial was last written (by ``clock``).
        self._written: dict[str, float] = {}
        #: A stamp per stored blob, new each time it is stored (its "mtime").
        self._stamps: dict[str, int] = {}
        self._next_stamp = itertools.count(1)
        #: When each blob was stored (by ``clock``).
        self._stored_at: dict[str, float] = {}
        #: Blobs moved aside by :meth:`quarantine`, by the name they were kept under.
        self.corrupt: dict[str, bytes] = {}
        self.fault = fault
        self.clock = clock

    def _fault(self, what: str) -> None:
        if self.fault is not None:
            try:
                self.fault(what)
            except OSError as exc:
                raise _os_error(what, exc) from None

    def has(self, content_hash: str) -> bool:
        return content_hash in self._blobs

    def size(self, content_hash: str) -> int | None:
        blob = self._blobs.get(content_hash)
        return None if blob is None else len(blob)

    def put(self, source: bytes | Path, *, stop: threading.Event | None = None) -> tuple[str, int]:
        self._fault("put")
        check_stop(stop)
        if isinstance(source, bytes):
            content_hash = sha256_hex(source)
        else:
            # In blocks, as on disk: a source that changes meanwhile is refused the same way.
            copied = bytearray()
            try:
                content_hash, _ = copy_source(source, lambda block, _: copied.extend(block), stop)
            except OSError as exc:
                raise _os_error("reading the source", exc) from None
            source = bytes(copied)
        self._store(content_hash, source)
        return content_hash, len(source)

    def _store(self, content_hash: str, data: bytes) -> None:
        if content_hash not in self._blobs:
            self._blobs[content_hash] = data
            self._stamps[content_hash] = next(self._next_stamp)
            self._stored_at[content_hash] = self.clock()

    def partial_size(self, content_hash: str) -> int:
        return len(self._partial.get(content_hash, b""))

    def append_partial(self, content_hash: str, offset: int, data: bytes) -> None:
        self._fault("append")
        part = self._partial.setdefault(content_hash, bytearray())
        if len(part) != offset:
            raise ValueError(f"partial holds {len(part)} bytes, not {offset}")
        part += data
        self._written[content_hash] = self.clock()

    def finish_partial(self, content_hash: str, *, digest: str | None = None) -> bool:
        self._fault("finish")
        part = self._partial.pop(content_hash, bytearray())
        self._written.pop(content_hash, None)
        if (digest or sha256_hex(bytes(part))) != content_hash:
            return False
        self._store(content_hash, bytes(part))
        return True

    def discard_partial(self, content_hash: str) -> None:
        self._partial.pop(content_hash, None)
        self._written.pop(content_hash, None)

    def read(self, content_hash: str, offset: int = 0, length: int | None = None) -> bytes:
        blob = self._blobs[content_hash]
        return blob[offset:] if length is None else blob[offset : offset + length]

    def local_path(self, content_hash: str) -> Path | None:
        return None

    def delete(self, content_hash: str) -> None:
        self._blobs.pop(content_hash, None)
        self._stamps.pop(content_hash, None)
        self._stored_at.pop(content_hash, None)

    def hashes(self) -> list[str]:
        return sorted(self._blobs)

    def usage(self) -> StoreUsage:
        return StoreUsage(sum(len(blob) for blob in self._blobs.values()), self.partials())

    def partials(self) -> dict[str, int]:
        return {content_hash: len(part) for content_hash, part in self._partial.items()}

    def touch(self, content_hash: str) -> None:
        if content_hash in self._blobs:
            self._stored_at[content_hash] = self.clock()

    def delete_unreferenced(self, keep: Collection[str], min_age: float) -> list[tuple[str, int]]:
        older_than = self.clock() - min_age
        deleted = sorted(
            (content_hash, len(blob))
            for content_hash, blob in self._blobs.items()
            if content_hash not in keep and self._stored_at.get(content_hash, 0.0) < older_than
        )
        for content_hash, _ in deleted:
            self.delete(content_hash)
        return deleted

    def expire_partials(self, max_age: float, keep: Collection[str] = ()) -> list[str]:
        older_than = self.clock() - max_age
        expired = sorted(
            content_hash
            for content_hash, written in self._written.items()
            if written < older_than and content_hash not in keep
        )
        for content_hash in expired:
            self.discard_partial(content_hash)
        return expired

    def fingerprint(self, content_hash: str) -> Fingerprint | None:
        blob = self._blobs.get(content_hash)
        return None if blob is None else (len(blob), self._stamps.get(content_hash, 0))

    def quarantine(self, content_hash: str, *, expect: Fingerprint | None = None) -> str | None:
        if content_hash not in self._blobs or (
            expect is not None and self.fingerprint(content_hash) != expect
        ):
            return None
        stamp = utc_stamp(self.clock())
        name = f"{content_hash}.{stamp}"
        for n in itertools.count(1):
            if name not in self.corrupt:
                break
            name = f"{content_hash}.{stamp}.{n}"
        self.corrupt[name] = self._blobs.pop(content_hash)
        self._stamps.pop(content_hash, None)
        return name
