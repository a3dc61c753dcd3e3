"""The local transfer state: per file and direction, durable, never synced.

It lives in a SQLite file of its own beside the client's store (``<store>.files``), so
file transfers never take the sync store's lock or touch its migrations; the files module
can evolve its schema on its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Mapping

import attrs

from .._errors import ClientClosed, StoreClosed, StoreError
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

    Writes run in the store's worker thread while the event loop reads, so the mirror is
    copy-on-write: a write builds new mappings and swaps them in whole. A loop-side reader
    that took ``rows`` iterates one consistent snapshot, never a dict changing under it.

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
        #: The uploads in error, by file id (kept beside ``rows`` so status counts stay
        #: cheap with thousands of files).
        self.failed_uploads = _failed(self.rows, "upload")
        #: The downloads in error, by file id (the same).
        self.failed_downloads = _failed(self.rows, "download")

        self._writing = threading.Lock()
        #: Counts the writes that changed rows (to tell whether anything did since).
        self.version = 0

    def get(self, file_id: str, direction: Direction) -> TransferState | None:
        return self.rows.get((file_id, direction))

    def set_many(self, changes: Iterable[tuple[Key, TransferState | None]]) -> None:
        """Writes several changes in one transaction (None deletes the row). Durable when
        this returns; the in-memory copy changes only then.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        self._write(list(changes))

    def forget(self, seen: Iterable[tuple[Key, TransferState]]) -> None:
        """Deletes each row that is still for the contents ``seen`` (in one transaction):
        a row written since for other contents (saved meanwhile, say) is left alone.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        expected = {key: state.content_hash for key, state in seen}
        self._write([(key, None) for key in expected], only_for=expected)

    def restore(self, rows: Iterable[tuple[Key, TransferState | None]], replaced: str) -> None:
        """Writes ``rows`` back (None deletes) where the row is still for the contents
        ``replaced`` (in one transaction): what a failed recording of them wrote is undone,
        and whatever was written since stands.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        changes = list(rows)
        self._write(changes, only_for={key: replaced for key, _ in changes})

    def update(self, key: Key, state: TransferState) -> bool:
        """Writes ``state`` only if the row still exists for the same contents (a worker
        reporting on a transfer that was deleted or superseded meanwhile changes nothing);
        returns whether it did.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        # A worker's report needs no fsync of its own: each is atomic, durable with the
        # next durable write, and what a power cut takes back is re-done, never lost. An
        # "in_progress" or "error" row reads as queued at the next start (start-up
        # recovery) either way; a "done" row taken back is queued again, and its transfer
        # ends at once (the server answers "stored already"; a download finds the blob
        # held). What must survive, that contents are to be uploaded, is written durably
        # with the save that records them.
        return self._write([(key, state)], only_for={key: state.content_hash}, durable=False) > 0

    def update_from(self, key: Key, seen: TransferState, state: TransferState) -> bool:
        """As :meth:`update`, only where the row is still exactly ``seen``: a worker's
        "in_progress", on its way while its transfer was stopped, never lands over the
        decision of whoever stopped it ("done" for these contents, say). Returns whether
        it wrote.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        return self._write([(key, state)], exactly={key: seen}, durable=False) > 0

    def set_if_contents_unchanged(
        self,
        changes: Iterable[tuple[Key, TransferState | None, TransferState | None]],
        provided: Mapping[Key, tuple[Key, str]] | None = None,
    ) -> int:
        """Writes each ``(key, new, seen)`` (None deletes) only where the row still names
        the contents ``seen`` named (None: still absent), in one transaction: a decision
        taken on what the caller read never overwrites other contents written since (a
        save's rows, say). A row whose status alone moved is written over: a transfer of
        the contents seen, stopped by the caller, may have put its "queued" back
        meanwhile, and the caller's decision replaces that transfer. A key in
        ``provided`` is written only if the row it names there (another key) still names
        the contents given: a decision taken on another row. Returns how many were
        written.

        Raises:
            StoreError: The write failed; nothing changed.
            ClientClosed: The client closed.
        """
        listed = list(changes)
        seen = {key: None if before is None else before.content_hash for key, _, before in listed}
        return self._write(
            [(key, new) for key, new, _ in listed], contents_from=seen, provided=provided
        )

    def _write(
        self,
        changes: list[tuple[Key, TransferState | None]],
        *,
        only_for: Mapping[Key, str] | None = None,
        contents_from: Mapping[Key, str | None] | None = None,
        exactly: Mapping[Key, TransferState] | None = None,
        provided: Mapping[Key, tuple[Key, str]] | None = None,
        durable: bool = True,
    ) -> int:
        """Writes ``changes``; with ``only_for``, only those whose row still exists for
        the contents it names; with ``contents_from``, only those whose row still names
        the contents named (None: absent); with ``exactly``, only those whose row is still
        the one given; with ``provided``, only those whose other row named there still
        names the contents given. Returns how many were written. Not ``durable``:
        atomic, and durable with the next durable write."""

        if not changes:
            return 0
        # One writer at a time from the check to the mirror: the rows checked are the
        # rows written over, and the mirror changes only once the commit succeeded.
        with self._writing:
            chosen = changes
            if only_for is not None:
                chosen = [
                    (key, state)
                    for key, state in changes
                    if (current := self.rows.get(key)) is not None
                    and current.content_hash == only_for[key]
                ]
            if contents_from is not None:
                chosen = [
                    (key, state)
                    for key, state in chosen
                    if _contents(self.rows.get(key)) == contents_from[key]
                ]
            if exactly is not None:
                chosen = [
                    (key, state) for key, state in chosen if self.rows.get(key) == exactly[key]
                ]
            if provided is not None:
                chosen = [
                    (key, state)
                    for key, state in chosen
                    if key not in provided
                    or _contents(self.rows.get(provided[key][0])) == provided[key][1]
                ]
            if not chosen:
                return 0

            def write(conn: sqlite3.Connection) -> None:
                for (file_id, direction), state in chosen:
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

            try:
                if durable:
                    self._db.write(write)
                else:
                    [failed] = self._db.write_batch([write], durable=False)
                    if isinstance(failed, BaseException):
                        raise failed
            except StoreClosed:
                # Only FileSync writes here, from its tasks or the application's: the
                # client closed under a save or an update.
                raise ClientClosed("the client closed") from None
            self._mirror(chosen)
            return len(chosen)

    def _mirror(self, chosen: list[tuple[Key, TransferState | None]]) -> None:
        rows = dict(self.rows)
        for key, state in chosen:
            if state is None:
                rows.pop(key, None)
            else:
                rows[key] = state
        # Swapped in whole, each by one assignment (see the class docstring).
        self.rows = rows
        self.failed_uploads = _failed(rows, "upload")
        self.failed_downloads = _failed(rows, "download")
        self.version += 1

    def uploads_to_go(self) -> set[str]:
        """The contents of the uploads not done yet."""
        rows = self.rows  # one snapshot (see the class docstring)
        return {
            state.content_hash
            for (_, direction), state in rows.items()
            if direction == "upload" and state.status != "done"
        }

    def with_status(self, direction: Direction, *statuses: TransferStatus) -> list[str]:
        return sorted(
            file_id
            for (file_id, dir_), state in self.rows.items()
            if dir_ == direction and state.status in statuses
        )

    def close(self) -> None:
        self._db.close()


def _failed(rows: Mapping[Key, TransferState], wanted: Direction) -> dict[str, TransferState]:
    """The transfers in error in one direction, by file id (one pass, as copying the rows
    for a write is)."""
    return {
        file_id: state
        for (file_id, direction), state in rows.items()
        if direction == wanted and state.status == "error"
    }


def _contents(row: TransferState | None) -> str | None:
    return None if row is None else row.content_hash


@attrs.frozen
class TransferSummary:
    """What a client's transfer state holds (``trio-sync status``): per direction, how
    many files are in each status, and the reason of one upload that gave up."""

    path: str
    uploads: dict[str, int]
    downloads: dict[str, int]
    upload_error: str | None


def inspect_transfers(path: str) -> TransferSummary | None:
    """Reads a transfer state file read-only, while its client may have it open (None:
    there is no file, the client never synced files).

    Raises:
        StoreError: It cannot be read (with why).
    """
    if not os.path.isfile(path):
        return None
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    # Without a write-ahead log beside it, everything is in the file: read it as
    # immutable, which needs no -shm (read-only media).
    if not os.path.exists(f"{path}-wal"):
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            counted = conn.execute(
                "SELECT direction, status, count(*) FROM transfers GROUP BY direction, status"
            ).fetchall()
            error = conn.execute(
                "SELECT last_error FROM transfers WHERE direction = 'upload' "
                "AND status = 'error' ORDER BY file_id LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the transfer state {path!r}: {exc}") from None
    by_direction: dict[str, dict[str, int]] = {"upload": {}, "download": {}}
    for direction, status, count in counted:
        by_direction.setdefault(direction, {})[status] = count
    return TransferSummary(
        path,
        by_direction["upload"],
        by_direction["download"],
        None if error is None else error[0],
    )
