"""The local transfer state: per file and direction, durable, never synced.

It lives in a SQLite file of its own beside the client's store (``<store>.files``), so
file transfers never take the sync store's lock or touch its migrations; the files module
can evolve its schema on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from ..store._sqlite import Database
from ._model import Direction, TransferState, TransferStatus


def _schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE transfers (file_id TEXT NOT NULL, direction TEXT NOT NULL, "
        "hash TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "last_error TEXT, PRIMARY KEY (file_id, direction)) WITHOUT ROWID"
    )


MIGRATIONS = [_schema_v1]

Key = tuple[str, Direction]


class TransferStateStore:
    """The ``transfers`` table, mirrored in memory (reads never touch the disk).

    Raises (from the constructor):
        StoreInUse, StoreCorrupt, StoreVersionError: as for the client store.
    """

    def __init__(self, path: str) -> None:
        self._db = Database(path, kind="files", migrations=MIGRATIONS)
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT file_id, direction, hash, status, attempts, last_error FROM transfers"
            ).fetchall()
        )
        self.rows: dict[Key, TransferState] = {
            (file_id, direction): TransferState(status, content_hash, attempts, last_error)
            for file_id, direction, content_hash, status, attempts, last_error in rows
        }

        #: Counts the writes that changed rows (to tell whether anything did since).
        self.version = 0

    def get(self, file_id: str, direction: Direction) -> TransferState | None:
        return self.rows.get((file_id, direction))

    def set_many(self, changes: Iterable[tuple[Key, TransferState | None]]) -> None:
        """Writes several changes in one transaction (None deletes the row). Durable when
        this returns; the in-memory copy changes only then.

        Raises:
            StoreError: The write failed; nothing changed.
        """
        self._write(list(changes), only_same_hash=False)

    def forget(self, seen: Iterable[tuple[Key, TransferState]]) -> None:
        """Deletes each row that is still as ``seen`` (in one transaction): a row written
        again since (new contents saved meanwhile, say) is left alone.

        Raises:
            StoreError: The write failed; nothing changed.
        """
        seen = list(seen)
        if not seen:
            return

        def write(conn: sqlite3.Connection) -> None:
            # Compared under the database's lock: writers are serialised there.
            gone = [key for key, state in seen if self.rows.get(key) == state]
            conn.executemany("DELETE FROM transfers WHERE file_id = ? AND direction = ?", gone)
            for key in gone:
                del self.rows[key]
            self.version += 1

        self._db.write(write)

    def update(self, key: Key, state: TransferState) -> bool:
        """Writes ``state`` only if the row still exists for the same contents (a worker
        reporting on a transfer that was deleted or superseded meanwhile changes nothing);
        returns whether it did.

        Raises:
            StoreError: The write failed; nothing changed.
        """
        return self._write([(key, state)], only_same_hash=True)

    def _write(
        self, changes: list[tuple[Key, TransferState | None]], *, only_same_hash: bool
    ) -> bool:
        if not changes:
            return False

        def write(conn: sqlite3.Connection) -> bool:
            # Checked under the database's lock: writers are serialised there.
            if only_same_hash:
                key, state = changes[0]
                current = self.rows.get(key)
                if current is None or state is None or current.content_hash != state.content_hash:
                    return False
            for (file_id, direction), state in changes:
                if state is None:
                    conn.execute(
                        "DELETE FROM transfers WHERE file_id = ? AND direction = ?",
                        (file_id, direction),
                    )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO transfers VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            file_id,
                            direction,
                            state.content_hash,
                            state.status,
                            state.attempts,
                            state.last_error,
                        ),
                    )

            for key, state in changes:
                if state is None:
                    self.rows.pop(key, None)
                else:
                    self.rows[key] = state
            self.version += 1
            return True

        return self._db.write(write)

    def with_status(self, direction: Direction, *statuses: TransferStatus) -> list[str]:
        return sorted(
            file_id
            for (file_id, dir_), state in self.rows.items()
            if dir_ == direction and state.status in statuses
        )

    def close(self) -> None:
        self._db.close()
