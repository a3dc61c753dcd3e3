"""SQLite plumbing shared by the client and the server store.

One place opens a database file the trio_sync way: an exclusive lock file beside it (so a
second process gets :class:`StoreInUse` instead of interleaving writes), WAL mode,
``synchronous=FULL`` (a commit survives power loss, not only a killed process), schema
migrations keyed on ``PRAGMA user_version``, and sqlite3 errors translated into trio_sync
errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

from .._errors import StoreCorrupt, StoreError, StoreInUse, StoreMismatch, StoreVersionError
from ..protocol import Event

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


def _lock_path(path: str) -> str:
    return path + ".lock"


def _acquire_lock(path: str) -> IO[bytes]:
    lock_file = open(_lock_path(path), "ab")  # noqa: SIM115 (held for the store's lifetime)
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise StoreInUse(
            f"store {path!r} is in use by another process (or another open handle); "
            "close it there first"
        ) from None
    return lock_file


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Maps sqlite3 and OS errors to trio_sync store errors that name the file."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "full" in text:
            raise StoreError(
                f"store {path!r}: the disk is full ({text}); nothing was written"
            ) from None
        if "locked" in text or "busy" in text:
            raise StoreInUse(f"store {path!r} is locked by another process ({text})") from None
        raise StoreError(f"store {path!r}: {text}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"store {path!r} is damaged or not a trio_sync store: {exc}") from None
    except OSError as exc:
        raise StoreError(f"store {path!r}: {exc}") from None


class Database:
    """A SQLite connection guarded by a lock, usable from any one thread at a time.

    The runtimes call store methods either inline (the simulator) or in a worker thread
    (production); the lock serialises them.
    """

    def __init__(self, path: str, *, kind: str, migrations: Sequence[Migration]) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        if not is_memory(self.path):
            self._lock_file = _acquire_lock(self.path)
        try:
            with translate_errors(self.path):
                self._conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    uri=self.path.startswith("file:"),
                )
                self._configure()
                self._migrate(kind, migrations)
        except BaseException:
            self._release_lock()
            raise

    def _configure(self) -> None:
        if not is_memory(self.path):
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path!r}: could not switch to WAL ({mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")

    def _migrate(self, kind: str, migrations: Sequence[Migration]) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(migrations):
            raise StoreVersionError(
                f"store {self.path!r} has schema version {version}; this trio_sync knows "
                f"up to {len(migrations)}: upgrade trio_sync"
            )
        if version == 0:
            tables = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'"
            ).fetchone()[0]
            if tables:
                raise StoreCorrupt(f"{self.path!r} is a SQLite file but not a trio_sync store")
        for number in range(version, len(migrations)):
            with self._transaction():
                migrations[number](self._conn)
                if number == 0:
                    self._conn.execute("CREATE TABLE store_kind (kind TEXT NOT NULL)")
                    self._conn.execute("INSERT INTO store_kind VALUES (?)", (kind,))
                self._conn.execute(f"PRAGMA user_version={number + 1}")
        found = self._conn.execute("SELECT kind FROM store_kind").fetchone()
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
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` in one durable transaction (all or nothing).

        Raises:
            StoreError: The write failed (disk full, I/O error); nothing was written.
        """
        with self._lock, translate_errors(self.path), self._transaction() as conn:
            return work(conn)

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``work`` for reading."""
        with self._lock, translate_errors(self.path):
            return work(self._conn)

    def close(self) -> None:
        """Closes the connection and releases the lock file. Safe to call twice."""
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
    EVENT_COLUMNS = "seq, client_id, client_seq, name, args"

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def path(self) -> str:
        return self._db.path

    def close(self) -> None:
        """Closes the store and releases its lock file."""
        self._db.close()

    @staticmethod
    def event_to_row(event: Event) -> tuple[int | None, str, int, str, str]:
        args = json.dumps(event.args, separators=(",", ":"), ensure_ascii=False)
        return (event.seq, event.client_id, event.client_seq, event.name, args)

    @staticmethod
    def row_to_event(row: tuple[int | None, str, int, str, str]) -> Event:
        seq, client_id, client_seq, name, args = row
        return Event(name, json.loads(args), client_id, client_seq, seq)


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
    """Creates the folder of ``path`` if needed (not for in-memory stores)."""
    if not is_memory(path):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
