"""The local blob garbage collector, and the saves it keeps out of the way of.

A save stores its blob before any fact refers to it, so a collector that decided what to
keep before the save began would delete it; and a deletion still running when a save
stores the same contents would unlink them under it. Both wait for each other here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager

import trio

from .._errors import StoreError
from .._store_runner import StoreRunner
from ._blobs import BlobStore


class BlobCollector:
    """Deletes the blobs nothing needs any more.

    Args:
        blobs: The client's blob store.
        run_store: Where its calls run.
        needed: The contents to keep (those of live files and of unfinished uploads).
        version: Changes whenever ``needed`` may have (compared with ``==``; never
            None), so that it is worked out again only then.
        trace: Where a failed collection is told (``ClientCore.trace``).
    """

    def __init__(
        self,
        blobs: BlobStore,
        run_store: StoreRunner,
        needed: Callable[[], set[str]],
        version: Callable[[], Hashable],
        trace: Callable[..., None],
    ) -> None:
        self._blobs = blobs
        self._run = run_store
        self._needed = needed
        self._version = version
        self._trace = trace
        #: The files saves under way write (an id once per save or update).
        self._saving: list[str] = []
        #: Saves begun so far (a decision taken meanwhile may have raced one).
        self.saves_begun = 0
        #: Held while a blob is deleted: a save waits for it before storing anything.
        self._deleting = trio.Lock()

    @asynccontextmanager
    async def saving(self, file_id: str) -> AsyncIterator[None]:
        """Around a save of ``file_id``: no collection runs while it does (a deletion
        under way ends first)."""
        self._saving.append(file_id)
        self.saves_begun += 1
        try:
            async with self._deleting:
                pass
            yield
        finally:
            self._saving.remove(file_id)

    def is_saving(self, file_id: str) -> bool:
        """Whether a save of ``file_id`` is under way (its upload row may be ahead of the
        facts: those contents are the newest)."""
        return file_id in self._saving

    async def collect(self) -> None:
        """Deletes every stored blob not needed; stops (for the next call to finish) as
        soon as a save begins, or at a blob that cannot be listed or deleted (traced:
        garbage costs room, no more, and the next collection tries again)."""
        try:
            await self._collect()
        except StoreError as exc:
            self._trace("files.collect_failed", error=str(exc))

    async def _collect(self) -> None:
        if self._saving:
            return
        keep: set[str] = set()
        kept_for: Hashable = None
        for content_hash in await self._run(self._blobs.hashes):
            async with self._deleting:
                # Asked again before each deletion: while the last one ran, a save may
                # have begun (storing these very contents, perhaps), or a fact may have
                # come to refer to them.
                if self._saving:
                    return
                version = self._version()
                if version != kept_for:
                    keep, kept_for = self._needed(), version
                if content_hash not in keep:
                    await self._run(self._blobs.delete, content_hash)
