"""The PostgreSQL log's schema: made and upgraded only by ``trio-sync migrate``, checked by
every node at start-up.

A node never changes the schema: several nodes start at once, and a node of an older
trio_sync must not "upgrade" a database that newer nodes use. So a node refuses to start on
a database without the schema (run ``trio-sync migrate --db URL``) or with a version it does
not know, and changes nothing.

The tables are the SQLite ones (``stores``, ``log``, ``meta``) in their own PostgreSQL
schema ``trio_sync``, plus each store's head in its ``stores`` row: the row an appending
transaction locks, so the lock and the head are read in one step (see ``_postgres.py``).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from .._errors import StoreCorrupt, StoreError, StoreMismatch, StoreVersionError
from ._pg_connect import PG_SCHEMA, connect, describe, translate_errors
from ._server_log import DEFAULT_STORE, EVENT_COLUMNS

if TYPE_CHECKING:
    import psycopg

    from ._server_store import ServerStore

#: Each migration brings the schema one version on, in the migrating transaction.
MIGRATIONS: list[list[str]] = [
    [
        f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}",
        f"CREATE TABLE {PG_SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE {PG_SCHEMA}.stores (store_id text PRIMARY KEY, server_id text NOT NULL, "
        "created_at double precision NOT NULL, head bigint NOT NULL DEFAULT 0)",
        # (store_id, seq) is the primary key: even a bug that skipped the lock could not
        # give two events one position; it would fail the transaction instead.
        f"CREATE TABLE {PG_SCHEMA}.log ("
        f"store_id text NOT NULL REFERENCES {PG_SCHEMA}.stores, seq bigint NOT NULL, "
        "client_id text NOT NULL, client_seq bigint NOT NULL, name text NOT NULL, "
        "args text NOT NULL, PRIMARY KEY (store_id, seq), "
        "UNIQUE (store_id, client_id, client_seq))",
        f"INSERT INTO {PG_SCHEMA}.meta VALUES ('kind', 'server')",
    ],
]

#: The schema version this trio_sync writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)

#: Serialises migrations of one database (two `migrate` runs at once).
_MIGRATE_LOCK = 0x7472696F5F73796E & 0x7FFFFFFFFFFFFFFF  # "trio_syn"


def _version(conn: psycopg.Connection[Any], url: str) -> int | None:
    """The schema version, None when the database has no trio_sync schema.

    Raises:
        StoreMismatch: The schema is not a server log's.
        StoreCorrupt: Its version row is missing or not a number.
    """
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{PG_SCHEMA}.meta",)).fetchone()
    if not row or not row[0]:
        return None
    kind = conn.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
    if kind is None or kind[0] != "server":
        raise StoreMismatch(
            f"the trio_sync schema in this database is a {kind[0] if kind else '?'} store, "
            "not a server log"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    # The schema and its version row are written in one transaction: a schema without a
    # usable version was changed by hand, and nothing can say what it holds.
    if row is None:
        raise StoreCorrupt(
            f"database {describe(url)}: the trio_sync schema has no schema_version row in "
            "trio_sync.meta, so the schema cannot be trusted; nothing was changed (restore "
            "the row, or the database from a backup)"
        )
    if not re.fullmatch(r"[1-9][0-9]{0,8}", str(row[0])):
        raise StoreCorrupt(
            f"database {describe(url)}: the trio_sync schema version is {str(row[0])[:40]!r}, "
            "not a version number, so the schema cannot be trusted; nothing was changed "
            "(restore the schema_version row of trio_sync.meta, or the database from a backup)"
        )
    return int(row[0])


def check_schema(conn: psycopg.Connection[Any], url: str) -> None:
    """Checks that the database holds the schema this trio_sync speaks; changes nothing.

    Raises:
        StoreVersionError: No schema yet (not migrated), an older one, or a newer one.
        StoreMismatch: The schema is not a server log's.
    """
    where = describe(url)
    version = _version(conn, url)
    if version is None:
        raise StoreVersionError(
            f"database {where} has no trio_sync schema: run `trio-sync migrate --db URL` "
            "first (a node never changes the schema by itself)"
        )
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"database {where} has schema version {version}; this trio_sync knows up to "
            f"{SCHEMA_VERSION}: upgrade trio_sync on this node"
        )
    if version < SCHEMA_VERSION:
        raise StoreVersionError(
            f"database {where} has schema version {version}, this trio_sync needs "
            f"{SCHEMA_VERSION}: run `trio-sync migrate --db URL`"
        )


def migrate(url: str) -> tuple[int, int]:
    """Creates or upgrades the schema of ``url`` (idempotent), in one transaction; a new
    database gets the default store with a new identity.

    Returns the version before (0: none) and after.

    Raises:
        StoreVersionError: The database has a newer schema than this trio_sync knows.
        StoreError: The database cannot be reached or written.
    """
    conn = connect(url)
    try:
        with translate_errors(url), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            before = _version(conn, url) or 0
            if before > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"database {describe(url)} has schema version {before}; this trio_sync "
                    f"knows up to {SCHEMA_VERSION}: upgrade trio_sync"
                )
            for number in range(before, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO stores (store_id, server_id, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (DEFAULT_STORE, uuid.uuid4().hex, time.time()),
            )
        return before, SCHEMA_VERSION
    finally:
        conn.close()


def copy_from_sqlite(sqlite: str | ServerStore, url: str, *, batch: int = 5000) -> dict[str, int]:
    """Copies a SQLite server log (a path, or the log already opened: the caller checked it
    and closes it) into the (migrated, still empty) PostgreSQL log at ``url``: every store
    with its identity (``server_id``) and every event at its position, so clients that
    synced with the SQLite server stay compatible. One transaction: all or nothing.

    Returns the number of events copied per store.

    Raises:
        StoreError: The PostgreSQL log already holds events (logs are never merged), or
            either database cannot be used (StoreInUse: a server still runs on the file).
    """
    from ._server_store import ServerStore

    if isinstance(sqlite, str):
        with contextlib.closing(ServerStore.open(sqlite)) as source:
            return copy_from_sqlite(source, url, batch=batch)
    source = sqlite
    conn = connect(url)
    copied: dict[str, int] = {}
    try:
        with translate_errors(url), conn.transaction():
            check_schema(conn, url)
            conn.execute("LOCK TABLE stores, log IN EXCLUSIVE MODE")
            row = conn.execute("SELECT count(*) FROM log").fetchone()
            if row and row[0]:
                raise StoreError(
                    f"database {describe(url)} already holds {row[0]} events: a log is copied "
                    "only into an empty one (logs are never merged)"
                )
            conn.execute("DELETE FROM stores")  # the fresh default store's new identity
            for info in source.stores():
                conn.execute(
                    "INSERT INTO stores (store_id, server_id, created_at, head) "
                    "VALUES (%s, %s, %s, %s)",
                    (info.store_id, info.server_id, time.time(), info.head),
                )
                copied[info.store_id] = _copy_events(source, conn, info.store_id, batch)
    finally:
        conn.close()
    return copied


def _copy_events(source: Any, conn: psycopg.Connection[Any], store_id: str, batch: int) -> int:
    after, count = 0, 0
    with conn.cursor() as cursor:
        while True:
            events = source.read(after, batch, store_id=store_id)
            if not events:
                return count
            with cursor.copy(f"COPY log (store_id, {EVENT_COLUMNS}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row((store_id, *source.event_to_row(event)))
            count += len(events)
            after = events[-1].seq
