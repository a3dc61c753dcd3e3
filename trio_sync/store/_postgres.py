"""The server log in PostgreSQL: one log that several server nodes append to.

It keeps every promise of the SQLite :class:`~trio_sync.store.ServerStore` and decides
pushes with the same code (``_server_log.decide_group``). What differs is where the heads
come from. One process owns a SQLite file, so its heads live in memory; here every node
appends, so a head is only ever read from the database, in the appending transaction:

* The transaction first locks the ``stores`` rows of the stores it appends to
  (``SELECT head ... FOR UPDATE``, in store id order, so two nodes appending to the same
  stores cannot deadlock). The row holds the store's head: the lock and the head are one
  read. Another node appending to the same store waits on that row until this transaction
  commits, then reads the head it left (READ COMMITTED: each statement sees what was
  committed before it), so positions stay contiguous, with no gap and no duplicate.
  Stores not in the group are not locked: stores append in parallel. (A per-store
  advisory lock would serialise as well, but the head would still have to be found with
  ``max(seq)``; the row lock also ends by itself if the node dies mid-transaction.)
* The same transaction moves the heads and sends ``NOTIFY trio_sync, 'store head'``:
  PostgreSQL delivers it at commit, to every node listening, and only if the commit
  happened. The events themselves are read from the table.
* An acknowledgement is sent only after ``commit()`` returns (psycopg raises if the commit
  fails or its outcome is unknown; the push is then answered "retry", and the re-push is
  idempotent).

Calls are synchronous and thread-safe (a psycopg_pool pool): the server runs them in
worker threads, as it does the SQLite store's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import StoreCorrupt, StoreError
from ..protocol import Event, PushDecision
from ._pg_connect import connect, connect_options, describe, translate_errors
from ._pg_schema import check_schema
from ._server_log import (
    DEFAULT_STORE,
    LAST_CLIENT_SEQ_SQL,
    READ_SQL,
    PushRequest,
    StoreInfo,
    decide_group,
    page_of,
    valid_store_id,
)

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

#: The channel appends are announced on; the payload is "<head> <store id>".
CHANNEL = "trio_sync"

#: Seconds a call waits for a pooled connection before it fails (the database is down:
#: pushes are answered "retry" instead of waiting for ever).
POOL_TIMEOUT = 5.0

#: Seconds :meth:`PostgresStore.check_writable` (the health check) waits for a pooled
#: connection: a load balancer's health check must be answered before its own timeout.
CHECK_TIMEOUT = 1.0

#: Seconds the pool goes on with one series of reconnection attempts (1 s after the
#: first, then 2 s later, doubling). psycopg_pool's backoff has no cap but this window: a
#: long one (it was an hour) let the delay grow to a minute, and a node stayed down for
#: that long after the database was back. So the window is short, and when it ends the
#: next series starts at once (:func:`_reconnect_again`): an attempt at least every
#: couple of seconds, for as long as the database is away, never giving up.
RECONNECT_WINDOW = 2.0


class _PgSql:
    """:class:`~trio_sync.store._server_log.Sql` on a psycopg cursor."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def rows(self, sql: str, params: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
        return self._cursor.execute(sql.replace("?", "%s").encode(), params).fetchall()

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(sql.replace("?", "%s").encode(), rows)


class PostgresStore:
    """The server's PostgreSQL log of every store, shared by any number of nodes."""

    #: Other processes append to this log: the server follows the database's heads.
    shared = True

    def __init__(self, url: str, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        self._url = url
        self._pool = pool
        self.path = describe(url)
        default = self.store(DEFAULT_STORE)
        if default is None:
            raise StoreCorrupt(f"database {self.path} has no {DEFAULT_STORE!r} store")
        self._default = default

    @classmethod
    def open(cls, url: str, *, max_connections: int = 8) -> PostgresStore:
        """Connects to the log at ``url`` (a ``postgresql://`` URL) and checks its schema.

        Raises:
            StoreVersionError: The database was not migrated (``trio-sync migrate``), or
                has a schema this trio_sync does not know. Nothing is changed.
            StoreError: It cannot be reached (the message says why), or psycopg is not
                installed.
        """
        from psycopg_pool import ConnectionPool

        conn = connect(url)  # first, alone: a clear error beats a pool timeout
        try:
            with translate_errors(url):
                check_schema(conn, url)
        finally:
            conn.close()
        pool: psycopg_pool.ConnectionPool[Any] = ConnectionPool(
            url,
            kwargs=connect_options(),
            min_size=1,
            max_size=max_connections,
            timeout=POOL_TIMEOUT,
            # A connection the database dropped (a restart) is found out and replaced
            # when taken, not by the push that would use it.
            check=ConnectionPool.check_connection,
            reconnect_timeout=RECONNECT_WINDOW,
            reconnect_failed=_reconnect_again,
            open=False,
            name="trio_sync",
        )
        with translate_errors(url):
            pool.open(wait=True, timeout=POOL_TIMEOUT)
        try:
            return cls(url, pool)
        except BaseException:
            pool.close()
            raise

    def close(self) -> None:
        """Closes every connection. Safe to call twice."""
        self._pool.close()

    # --- stores -----------------------------------------------------------------------

    @property
    def server_id(self) -> str:
        """The default store's identity."""
        return self._default.server_id

    @property
    def head(self) -> int:
        """The default store's head, as last read (other nodes may have moved it since)."""
        return self._default.head

    def store(self, store_id: str) -> StoreInfo | None:
        """What the database knows of ``store_id`` now (None: no such store)."""
        rows = self._query(
            "SELECT store_id, server_id, head FROM stores WHERE store_id = %s", (store_id,)
        )
        if not rows:
            return None
        info = StoreInfo(*rows[0])
        if store_id == DEFAULT_STORE:
            self._default = info
        return info

    def store_count(self) -> int:
        """How many stores there are."""
        return int(self._query("SELECT count(*) FROM stores", ())[0][0])

    def stores(self) -> list[StoreInfo]:
        """Every store, by id."""
        rows = self._query("SELECT store_id, server_id, head FROM stores ORDER BY store_id", ())
        return [StoreInfo(*row) for row in rows]

    def heads(self, store_ids: Sequence[str]) -> dict[str, int]:
        """The head of each of ``store_ids`` now (the poll behind the notifications)."""
        rows = self._query(
            "SELECT store_id, head FROM stores WHERE store_id = ANY(%s)", (list(store_ids),)
        )
        return {store_id: int(head) for store_id, head in rows}

    def create_store(self, store_id: str) -> StoreInfo:
        """Creates ``store_id`` with a new identity (or returns the existing one: two nodes
        creating it at once agree on one identity).

        Raises:
            ValueError: Not a valid store id.
            StoreError: The database cannot be written.
        """
        if not valid_store_id(store_id):
            raise ValueError(f"{store_id!r} is not a valid store id")
        with translate_errors(self._url), self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO stores (store_id, server_id, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (store_id, uuid.uuid4().hex, time.time()),
            )
            row = conn.execute(
                "SELECT store_id, server_id, head FROM stores WHERE store_id = %s", (store_id,)
            ).fetchone()
        assert row is not None
        return StoreInfo(*row)

    # --- the log ----------------------------------------------------------------------

    def read(
        self, after: int, limit: int, *, store_id: str = DEFAULT_STORE, max_bytes: int = 0
    ) -> list[Event]:
        """Up to ``limit`` events of ``store_id`` with seq > ``after``, in order, and at
        most ``max_bytes`` (as :meth:`ServerStore.read <trio_sync.store.ServerStore.read>`)."""
        rows = self._query(READ_SQL.replace("?", "%s"), (store_id, after, limit))
        return page_of(rows, max_bytes)

    def last_client_seq(self, client_id: str, *, store_id: str = DEFAULT_STORE) -> int:
        """The highest client_seq ``store_id`` holds from ``client_id`` (0: none)."""
        rows = self._query(LAST_CLIENT_SEQ_SQL.replace("?", "%s"), (store_id, client_id))
        return int(rows[0][0])

    def apply_pushes(self, requests: Sequence[PushRequest]) -> list[PushDecision]:
        """Decides and applies pushes in order, in one transaction (see the module).

        Returns one decision per push; accepted events are committed when this returns.

        Raises:
            KeyError: A push names a store that does not exist (the caller checks first).
            StoreError: The transaction failed or its outcome is unknown (the database
                went away during the commit); nothing is acknowledged, a re-push is safe.
        """
        store_ids = sorted({request.store_id for request in requests})
        with (
            translate_errors(self._url),
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            locked = cursor.execute(
                "SELECT store_id, head FROM stores WHERE store_id = ANY(%s) "
                "ORDER BY store_id FOR UPDATE",
                (store_ids,),
            ).fetchall()
            start = {store_id: int(head) for store_id, head in locked}
            decisions, heads = decide_group(_PgSql(cursor), requests, start.__getitem__)
            for store_id, head in sorted(heads.items()):
                cursor.execute("UPDATE stores SET head = %s WHERE store_id = %s", (head, store_id))
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{head} {store_id}"))
        # Leaving the block committed: only now may anything be acknowledged.
        if DEFAULT_STORE in heads:
            self._default = StoreInfo(DEFAULT_STORE, self._default.server_id, heads[DEFAULT_STORE])
        return decisions

    def check_writable(self) -> None:
        """Writes a small record, to learn now that the database cannot be written (down,
        a read-only replica, no privilege) rather than at the next push.

        Raises:
            StoreReadOnly: The database refuses writes.
            StoreError: It cannot be reached.
        """
        with translate_errors(self._url), self._pool.connection(timeout=CHECK_TIMEOUT) as conn:
            conn.execute(
                "INSERT INTO meta VALUES ('last_write_check', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

    def listen(self) -> HeadListener:
        """A connection that hears every node's appends (see :class:`HeadListener`).

        Raises:
            StoreError: It cannot be opened.
        """
        return HeadListener(self._url)

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with translate_errors(self._url), self._pool.connection() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(sql.encode(), params).fetchall()
            return rows


def _reconnect_again(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Called by the pool when a series of reconnection attempts ended without a
    connection (:data:`RECONNECT_WINDOW`): starts the next series now, with the backoff
    back at its first step. (``check()`` is the pool's public way to make it grow back to
    its minimum size; it also tests the connections it holds, if any.)"""
    if not pool.closed:
        pool.check()


class HeadListener:
    """One dedicated connection that LISTENs to the append channel.

    Notifications can be missed (they are not sent to a connection that was down), so the
    server also polls the heads now and then; this only makes the usual case fast.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn = connect(url, autocommit=True)
        with translate_errors(url):
            self._conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> dict[str, int]:
        """The highest head announced for each store within ``timeout`` seconds (returns
        as soon as there is one; empty when there was none).

        Raises:
            StoreError: The connection was lost (open a new listener).
        """
        heads: dict[str, int] = {}
        with translate_errors(self._url):
            for note in self._conn.notifies(timeout=timeout, stop_after=1):
                _take(heads, note.payload)
            if heads:  # and whatever else is already waiting
                for note in self._conn.notifies(timeout=0.001):
                    _take(heads, note.payload)
            if self._conn.closed or self._conn.broken:
                raise StoreError(f"database {describe(self._url)}: the connection was lost")
        return heads

    def close(self) -> None:
        self._conn.close()


def _take(heads: dict[str, int], payload: str) -> None:
    head, _, store_id = payload.partition(" ")
    try:
        value = int(head)
    except ValueError:
        return  # not ours: someone else's NOTIFY on our channel
    heads[store_id] = max(value, heads.get(store_id, 0))
