"""The files whose transfers are not in line with the facts because a reconcile failed.

A reconcile writes rows; on a full disk (or any store error) it fails, and the rows may
name contents no event has, or miss a download the facts ask for. Those files are kept
here and reconciled again every :data:`SETTLE_AGAIN_EVERY` seconds until it works
(online or not); meanwhile the transfers are not called settled, so ``wait_idle()``
waits. Each file is noted with a generation: a retry that succeeds forgets only the
files not noted again since it took its list (a failure that came meanwhile stays).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

#: Seconds between two reconciles of the unsettled files.
SETTLE_AGAIN_EVERY = 5.0


class UnsettledFiles:
    """The files a failed reconcile left (see the module's text)."""

    def __init__(self) -> None:
        self._files: dict[str, int] = {}
        self._generation = 0
        #: Set when files are noted (the retry task waits for it).
        self.noted = trio.Event()

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._files

    def __repr__(self) -> str:
        return f"UnsettledFiles({sorted(self._files)})"

    def note(self, files: Iterable[str]) -> None:
        """Notes ``files`` as unsettled (again)."""
        self._generation += 1
        for file_id in files:
            self._files[file_id] = self._generation
        if self._files:
            self.noted.set()

    def take(self) -> Mapping[str, int]:
        """The files to reconcile now, with their generations (they stay noted)."""
        return dict(self._files)

    def settled(self, taken: Mapping[str, int]) -> None:
        """Forgets the files of ``taken`` (reconciled) that were not noted again since."""
        for file_id, generation in taken.items():
            if self._files.get(file_id) == generation:
                del self._files[file_id]
        if not self._files:
            self.noted = trio.Event()
