"""SQLite plumbing shared by the client and the server store.

One place opens a database file the trio_sync way: an exclusive lock file beside it (so a
second process gets :class:`StoreInUse` instead of interleaving writes), WAL mode,
``synchronous=FULL`` (a commit survives power loss, not only a killed process), schema
migrations keyed on ``PRAGMA user_version``, and sqlite3 errors translated into trio_sync
errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

from .._errors import (
    StoreClosed,
    StoreCorrupt,
    StoreDamaged,
    StoreError,
    StoreFull,
    StoreInUse,
    StoreMismatch,
    StoreReadOnly,
    StoreVersionError,
)
from ._names import refuse_other_names
from ._server_log import EVENT_COLUMNS, event_to_row, row_to_event

T = TypeVar("T")

MEMORY = ":memory:"


def memory_path(name: str) -> str:
    """A named in-memory database: it lives while any connection to it is open, so a
    simulated client can crash and reopen its store (the simulator keeps one open)."""
    return f"file:trio_sync_{name}?mode=memory&cache=shared"


def is_memory(path: str) -> bool:
    return path == MEMORY or (path.startswith("file:") and "mode=memory" in path)


#: A migration takes the connection inside a transaction and brings the schema one step on.
Migration = Callable[[sqlite3.Connection], None]


def lock_path(path: str) -> str:
    """The store's lock file: beside the file the path resolves to, so that a symbolic
    link to a store in use finds the same lock. (A hard link is another name the lock
    cannot see: ``_names.refuse_other_names`` refuses a file that has one.)"""
    return os.path.realpath(path) + ".lock"


#: What the lock file holds once trio_sync has opened a store at its path.
OPENED_MARK = b"trio_sync opened a store here\n"


def opened_here(path: str) -> bool:
    """Whether trio_sync once opened a store at ``path`` (its lock file says so: a lock
    file alone proves nothing, any attempt to open a path makes one); False when that
    cannot be read."""
    try:
        with open(lock_path(path), "rb") as lock_file:
            return lock_file.read(len(OPENED_MARK) + 1) == OPENED_MARK
    except OSError:
        return False


def _acquire_lock(path: str) -> IO[bytes]:
    try:
        lock_file = open(lock_path(path), "a+b")  # noqa: SIM115 (held for the store's lifetime)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise StoreInUse(
            f"store {path!r} is in use by another process (or another open handle); "
            "close it there first"
        ) from None
    return lock_file


def _os_error(path: str, exc: OSError) -> StoreError:
    text = exc.strerror or str(exc)
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return StoreReadOnly(f"store {path!r} cannot be written: {text} ({exc.filename})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"store {path!r}: the disk is full ({text}); nothing was written")
    return StoreError(f"store {path!r}: {text}")


def _sqlite_error(path: str, exc: sqlite3.Error) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name == "SQLITE_FULL":
        return StoreFull(f"store {path!r}: the disk is full ({text}); nothing was written")
    if name.startswith("SQLITE_READONLY") or name == "SQLITE_PERM":
        return StoreReadOnly(f"store {path!r} cannot be written: {text}")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreInUse(f"store {path!r} is locked by another process ({text})")
    if name.startswith("SQLITE_CORRUPT"):
        return StoreDamaged(f"store {path!r} is damaged: {text}")
    if name.startswith("SQLITE_NOTADB") or type(exc) is sqlite3.DatabaseError:
        # Not moved aside as damaged: it may be some other file the path points at.
        return StoreCorrupt(f"store {path!r} is damaged or not a trio_sync store: {text}")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(f"store {path!r} cannot be opened: {text}")
    if name.startswith("SQLITE_IOERR"):
        return StoreError(f"store {path!r}: I/O error ({text}); nothing was written")
    return StoreError(f"store {path!r}: {text}")


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Maps sqlite3 and OS errors to trio_sync store errors that name the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc) from None
    except OSError as exc:
        raise _os_error(path, exc) from None


class _WorkFailed(Exception):
    """Carries the error of a work out of its transaction, which it rolls back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class Database:
    """A SQLite connection guarded by a lock, usable from any one thread at a time.

    The runtimes call store methods either inline (the simulator) or in a worker thread
    (production); the lock serialises them. A file database also has a second connection
    for reads, with its own lock: in WAL mode a reader sees the last committed state and
    never waits for a writer's fsync, so cheap reads can run on the event loop.
    """

    def __init__(
        self,
        path: str,
        *,
        kind: str,
        migrations: Sequence[Migration],
        manual_checkpoints: bool = False,
    ) -> None:
        self.path = str(path)
        self._manual_checkpoints = manual_checkpoints
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._reader: sqlite3.Connection | None = None
        self._synchronous = "FULL"
        on_disk = not is_memory(self.path)
        if on_disk:
            with translate_errors(self.path):
                if os.path.exists(self.path):
                    # Before the lock: a refused name is left without a lock file.
                    refuse_other_names(self.path)
            self._lock_file = _acquire_lock(self.path)
        try:
            with translate_errors(self.path):
                self._conn = self._connect()
                self._identity = self._file_identity()
                if on_disk:
                    # Again, before anything is read or written: a name given to the file
                    # while it was being created, before this name's lock, counts too.
                    refuse_other_names(self.path)
                self._check_integrity()
                self._configure()
                self._migrate(kind, migrations)
                if on_disk:
                    self._reader = self._connect()
            if self._lock_file is not None:
                self._mark_opened(self._lock_file)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _mark_opened(lock_file: IO[bytes]) -> None:
        # Unbuffered (a failed write leaves nothing to fail again at close), and not
        # synced: a mark lost in a crash or to a full disk only means a damaged store is
        # refused (left for you to look at) instead of moved aside and rebuilt.
        fd = lock_file.fileno()
        try:
            if os.pread(fd, len(OPENED_MARK) + 1, 0) != OPENED_MARK:
                os.ftruncate(fd, 0)
                os.write(fd, OPENED_MARK)
        except OSError:
            pass  # the store itself opened, which is what was asked

    def _file_identity(self) -> tuple[int, int] | None:
        if is_memory(self.path):
            return None
        info = os.stat(self.path)
        return (info.st_dev, info.st_ino)

    def check_file(self) -> None:
        """Checks that the file at the path is still the one opened.

        Raises:
            StoreError: It was deleted or replaced: writes go to a file nobody will read.
        """
        if self._identity is None:
            return
        try:
            same = self._file_identity() == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreError(
                f"store {self.path!r} was deleted or replaced while in use: what is written "
                "now is lost at the next start; restart on the right file"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            uri=self.path.startswith("file:"),
        )

    def _check_integrity(self) -> None:
        # Before anything is changed (WAL mode, migrations): a damaged file stays as found.
        problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreDamaged(
                f"store {self.path!r} is damaged (SQLite's integrity check: "
                f"{'; '.join(problems)[:300]})"
            )

    def _configure(self) -> None:
        if not is_memory(self.path):
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path!r}: could not switch to WAL ({mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        if self._manual_checkpoints:
            # The caller runs writes that need no fsync on its event loop: a checkpoint
            # (which fsyncs) must not happen there, so it asks for them (checkpoint()).
            self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def _migrate(self, kind: str, migrations: Sequence[Migration]) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'"
            ).fetchone()[0]
            if tables:
                raise StoreCorrupt(f"{self.path!r} is a SQLite file but not a trio_sync store")
        else:
            self._check_kind(kind)  # before the version: another kind has other versions
        if version > len(migrations):
            raise StoreVersionError(
                f"store {self.path!r} has schema version {version}; this trio_sync knows "
                f"up to {len(migrations)}: upgrade trio_sync"
            )
        for number in range(version, len(migrations)):
            with self._transaction():
                migrations[number](self._conn)
                if number == 0:
                    self._conn.execute("CREATE TABLE store_kind (kind TEXT NOT NULL)")
                    self._conn.execute("INSERT INTO store_kind VALUES (?)", (kind,))
                self._conn.execute(f"PRAGMA user_version={number + 1}")
        self._check_kind(kind)

    def _check_kind(self, kind: str) -> None:
        try:
            found = self._conn.execute("SELECT kind FROM store_kind").fetchone()
        except sqlite3.OperationalError:
            found = None
        if found is None or found[0] != kind:
            raise StoreMismatch(
                f"store {self.path!r} is a trio_sync {found[0] if found else '?'} store, "
                f"not a {kind} store"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")  # can fail too (a full disk shows up here)
        except BaseException:
            # SQLite rolls back by itself after some errors (SQLITE_FULL among them); a
            # failing rollback must not hide the error that caused it.
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` in one durable transaction (all or nothing).

        Raises:
            StoreError: The write failed (disk full, I/O error); nothing was written.
        """
        with self._lock, translate_errors(self.path):
            self._require_open()
            self._set_synchronous("FULL")
            with self._transaction() as conn:
                return work(conn)

    def write_batch(
        self, works: Sequence[Callable[[sqlite3.Connection], Any]], *, durable: bool
    ) -> list[Any]:
        """Runs each of ``works`` in a savepoint of one transaction: one commit, and one
        fsync when ``durable`` (otherwise the commit is atomic, and durable once a later
        durable commit is: WAL frames are written in order).

        Returns one result per work, in order: what it returned, or the StoreError (or
        other exception) it raised, in which case its changes alone were rolled back.

        Raises:
            StoreError: The transaction itself failed (a full disk at commit, say):
                nothing of any work was written.
        """
        with self._lock, translate_errors(self.path):
            self._require_open()
            self._set_synchronous("FULL" if durable else "NORMAL")
            if len(works) == 1:
                return [self._write_one(works[0])]
            with self._transaction() as conn:
                results: list[Any] = []
                for work in works:
                    conn.execute("SAVEPOINT work")
                    try:
                        results.append(work(conn))
                    except Exception as exc:
                        if not conn.in_transaction:
                            raise  # SQLite rolled the whole transaction back (SQLITE_FULL)
                        conn.execute("ROLLBACK TO work")
                        results.append(
                            _sqlite_error(self.path, exc) if isinstance(exc, sqlite3.Error) else exc
                        )
                    conn.execute("RELEASE work")
                return results

    def _write_one(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """:meth:`write_batch` of one work, whose transaction is its savepoint: what it
        returned, or the error it raised (then nothing was written).

        Raises:
            sqlite3.Error: The transaction itself failed (translated by the caller).
        """
        try:
            with self._transaction() as conn:
                try:
                    return work(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole transaction back (SQLITE_FULL)
                    raise _WorkFailed(exc) from exc  # the transaction rolls back
        except _WorkFailed as failed:
            error = failed.error
            return _sqlite_error(self.path, error) if isinstance(error, sqlite3.Error) else error

    def checkpoint(self) -> None:
        """Copies the write-ahead log into the database (a passive checkpoint: it waits
        for nobody). For a database opened with ``manual_checkpoints``; run it where an
        fsync may block."""
        with self._lock, translate_errors(self.path):
            self._require_open()
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _require_open(self) -> None:
        """Raises StoreClosed once :meth:`close` ran (called under the lock, so a write
        racing the close either runs first or is refused)."""
        if getattr(self, "_conn", None) is None:
            raise self._closed_error()

    def _closed_error(self) -> StoreClosed:
        return StoreClosed(f"store {self.path!r} is closed")

    def _set_synchronous(self, level: str) -> None:
        if level != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` for reading: on the reader connection of a file database (it sees
        the last committed state and does not wait for a write in progress)."""
        if self._reader is None:
            with self._lock, translate_errors(self.path):
                self._require_open()
                return work(self._conn)
        with self._read_lock, translate_errors(self.path):
            if self._reader is None:  # closed since it was looked at, above
                raise self._closed_error()
            return work(self._reader)

    def close(self) -> None:
        """Closes the connections and releases the lock file. Safe to call twice."""
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
                self._conn = None  # type: ignore[assignment]
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class SQLiteStore:
    """What both stores share: a :class:`Database` and the way events are stored in rows."""

    #: The columns of a stored event, in the order :meth:`row_to_event` reads them.
    EVENT_COLUMNS = EVENT_COLUMNS

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def path(self) -> str:
        return self._db.path

    def close(self) -> None:
        """Closes the store and releases its lock file."""
        self._db.close()

    def check_writable(self) -> None:
        """Writes a small durable record, to learn now rather than at the first real write
        that the store cannot be written.

        Raises:
            StoreReadOnly: The file or its folder cannot be written.
            StoreFull: The disk is full.
            StoreError: Another failure to write.
        """
        self._db.check_file()
        self._db.write(lambda conn: set_meta(conn, "last_write_check", time.time()))

    # How events are stored in rows: the same for every store and backend.
    event_to_row = staticmethod(event_to_row)
    row_to_event = staticmethod(row_to_event)


def get_meta(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def ensure_directory(path: str) -> None:
    """Creates the folder of ``path`` if needed (not for in-memory stores).

    Raises:
        StoreError: The folder cannot be created (StoreReadOnly when not permitted).
    """
    if not is_memory(path):
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(
                f"store {path!r} cannot be created: a part of {folder!r} is a file, not a folder"
            ) from None
        except OSError as exc:
            raise _os_error(path, exc) from None
