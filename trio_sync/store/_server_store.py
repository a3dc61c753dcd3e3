"""The server's durable log: every store's events with their global positions.

One database holds many independent stores, each with its own log (seqs 1, 2, 3 ...) and
its own identity (a ``server_id`` made when the store is created, which clients remember:
a store rebuilt from scratch gets a new one, and its clients notice). The store named
:data:`DEFAULT_STORE` always exists; it serves the bare URL.

Pushes are applied in groups: :meth:`ServerStore.apply_pushes` decides and appends several
pushes, of any stores, in one transaction and one fsync, and the server acknowledges none
of them before that commit returns.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._errors import StoreCorrupt, StoreDamaged
from ..protocol import Event, PushDecision
from ._server_log import (
    DEFAULT_STORE,
    LAST_CLIENT_SEQ_SQL,
    READ_SQL,
    HeadFeed,
    PushRequest,
    StoreInfo,
    decide_group,
    page_of,
    valid_store_id,
)
from ._sqlite import Database, SQLiteStore, ensure_directory, get_meta, set_meta


class _SQLiteSql:
    """:class:`~trio_sync.store._server_log.Sql` on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
        return self._conn.execute(sql, params)

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)


def _schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
        "client_seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL, "
        "UNIQUE (client_id, client_seq))"
    )
    set_meta(conn, "server_id", uuid.uuid4().hex)


def _schema_v2(conn: sqlite3.Connection) -> None:
    """Many stores: the v1 log becomes the default store, with its identity, so clients
    that synced with it stay compatible."""
    conn.execute(
        "CREATE TABLE stores (store_id TEXT PRIMARY KEY, server_id TEXT NOT NULL, "
        "created_at REAL NOT NULL) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO stores VALUES (?, ?, ?)",
        (DEFAULT_STORE, get_meta(conn, "server_id"), time.time()),
    )
    # A rowid table: rows can be large, which WITHOUT ROWID tables handle badly.
    conn.execute(
        "CREATE TABLE log (store_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "client_id TEXT NOT NULL, client_seq INTEGER NOT NULL, name TEXT NOT NULL, "
        "args TEXT NOT NULL, UNIQUE (store_id, seq), UNIQUE (store_id, client_id, client_seq))"
    )
    conn.execute(
        "INSERT INTO log (store_id, seq, client_id, client_seq, name, args) "
        "SELECT ?, seq, client_id, client_seq, name, args FROM events ORDER BY seq",
        (DEFAULT_STORE,),
    )
    conn.execute("DROP TABLE events")


MIGRATIONS = [_schema_v1, _schema_v2]


class ServerStore(SQLiteStore):
    """The server's SQLite log of every store. Heads are kept in memory: one process owns
    the file (the lock file sees to that), so only its own appends move them."""

    #: No other process appends to this log (see ``PostgresStore`` for one that does).
    shared = False

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        rows = db.read(
            lambda conn: conn.execute(
                "SELECT stores.store_id, server_id, coalesce(max(seq), 0) FROM stores "
                "LEFT JOIN log ON log.store_id = stores.store_id GROUP BY stores.store_id"
            ).fetchall()
        )
        self._stores = {row[0]: StoreInfo(*row) for row in rows}
        #: Held from looking a new store up to caching it: two connections creating one
        #: store at once (each from its worker thread) get one identity, not an error.
        self._creating = threading.Lock()
        self._check_log(db)
        if DEFAULT_STORE not in self._stores:
            raise StoreCorrupt(f"store {db.path!r} has no {DEFAULT_STORE!r} store")

    @staticmethod
    def _check_log(db: Database) -> None:
        """A log clients can trust holds positions 1..head of each store, each once."""
        gaps = db.read(
            lambda conn: conn.execute(
                "SELECT store_id, count(*), max(seq), min(seq) FROM log GROUP BY store_id "
                "HAVING count(*) != max(seq) OR min(seq) != 1 LIMIT 3"
            ).fetchall()
        )
        if gaps:
            described = "; ".join(
                f"store {store!r} holds {count} events at positions {low}..{high}"
                for store, count, high, low in gaps
            )
            raise StoreDamaged(
                f"server log {db.path!r} cannot be trusted: {described} (positions must run "
                "from 1 with no gap). Nothing was changed; restore it from a backup"
            )

    @classmethod
    def open(cls, path: str) -> ServerStore:
        """Opens (creating if needed) the server log at ``path`` (":memory:" for tests).

        Raises:
            StoreInUse, StoreCorrupt, StoreVersionError, StoreMismatch: as for the client.
            StoreReadOnly: The file or its folder cannot be written (``check_writable``
                tells before the first push does).
        """
        path = str(path)
        ensure_directory(path)
        db = Database(path, kind="server", migrations=MIGRATIONS)
        try:
            return cls(db)
        except BaseException:
            db.close()
            raise

    # --- stores -----------------------------------------------------------------------

    @property
    def server_id(self) -> str:
        """The default store's identity."""
        return self._stores[DEFAULT_STORE].server_id

    @property
    def head(self) -> int:
        """The default store's head."""
        return self._stores[DEFAULT_STORE].head

    def store(self, store_id: str) -> StoreInfo | None:
        """What the database knows of ``store_id`` (None: no such store)."""
        return self._stores.get(store_id)

    def store_count(self) -> int:
        """How many stores there are."""
        return len(self._stores)

    def stores(self) -> list[StoreInfo]:
        """Every store, by id."""
        return sorted(self._stores.values(), key=lambda info: info.store_id)

    def heads(self, store_ids: Sequence[str]) -> dict[str, int]:
        """The head of each of ``store_ids`` that exists."""
        return {s: self._stores[s].head for s in store_ids if s in self._stores}

    def listen(self) -> HeadFeed:
        """Raises:
        NotImplementedError: Always: nobody else appends to a SQLite log."""
        raise NotImplementedError("a SQLite log has one writer: there is nothing to hear")

    def create_store(self, store_id: str) -> StoreInfo:
        """Creates ``store_id`` with a new identity (or returns the existing one).

        Raises:
            ValueError: Not a valid store id.
            StoreError: The database cannot be written.
        """
        if not valid_store_id(store_id):
            raise ValueError(f"{store_id!r} is not a valid store id")
        with self._creating:
            existing = self._stores.get(store_id)
            if existing is not None:
                return existing
            info = StoreInfo(store_id=store_id, server_id=uuid.uuid4().hex, head=0)
            self._db.write(
                lambda conn: conn.execute(
                    "INSERT INTO stores VALUES (?, ?, ?)", (store_id, info.server_id, time.time())
                )
            )
            self._stores[store_id] = info
            return info

    # --- the log ----------------------------------------------------------------------

    def read(
        self, after: int, limit: int, *, store_id: str = DEFAULT_STORE, max_bytes: int = 0
    ) -> list[Event]:
        """Up to ``limit`` events of ``store_id`` with seq > ``after``, in order.

        With ``max_bytes``, stops before the events' encoded size (bounded from above:
        name, args and :data:`EVENT_ENVELOPE_BYTES` each) would pass it, but always returns
        at least one event if there is one: a page must make progress.
        """

        return self._db.read(
            lambda conn: page_of(conn.execute(READ_SQL, (store_id, after, limit)), max_bytes)
        )

    def last_client_seq(self, client_id: str, *, store_id: str = DEFAULT_STORE) -> int:
        """The highest client_seq ``store_id`` holds from ``client_id`` (0: none), which the
        handshake compares with what the client says it has, to catch a reused id."""
        row = self._db.read(
            lambda conn: conn.execute(LAST_CLIENT_SEQ_SQL, (store_id, client_id)).fetchone()
        )
        return int(row[0])

    def apply_pushes(self, requests: Sequence[PushRequest]) -> list[PushDecision]:
        """Decides and applies pushes in order, in one transaction.

        Returns one decision per push; accepted events are durable when this returns.

        Raises:
            KeyError: A push names a store that does not exist (the caller checks first).
            StoreError: The transaction failed (StoreFull on a full disk); nothing was
                written, and the heads are as they were.
        """

        def write(conn: sqlite3.Connection) -> tuple[list[PushDecision], dict[str, int]]:
            # One process owns the file, so the heads in memory are the database's.
            return decide_group(
                _SQLiteSql(conn), requests, lambda store_id: self._stores[store_id].head
            )

        # An acknowledgement must survive a restart: never into a file that was deleted.
        self._db.check_file()
        decisions, heads = self._db.write(write)
        for store_id, head in heads.items():  # only now is it durable: publish the heads
            self._stores[store_id] = attrs.evolve(self._stores[store_id], head=head)
        return decisions
