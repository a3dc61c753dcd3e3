"""What every server log does the same way, whatever database holds it.

The server log has two implementations: :class:`~trio_sync.store.ServerStore` (SQLite, one
process owns the file) and :class:`~trio_sync.store.PostgresStore` (PostgreSQL, many nodes
append to one database). Both keep the same tables (``stores``, ``log``) and decide pushes
with the same code, here: the facts a decision needs are read with the same queries, and
:func:`~trio_sync.protocol.decide_push` decides. A backend only supplies a way to run a
query (:class:`Sql`), the heads, and the transaction around it.

Queries are written with ``?`` placeholders (SQLite's); the PostgreSQL backend turns them
into ``%s``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import orjson

from .._errors import StoreCorrupt
from ..protocol import (
    EVENT_ENVELOPE_BYTES,
    MAX_STORE_ID_LENGTH,
    Accept,
    Event,
    Push,
    PushDecision,
    PushFacts,
    decide_push,
)

#: The store the bare URL (``ws://host:port``) serves.
DEFAULT_STORE = "default"

_STORE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_STORE_ID_LENGTH - 1}}}")

#: The columns of a stored event, in the order :func:`row_to_event` reads them.
EVENT_COLUMNS = "seq, client_id, client_seq, name, args"

#: A page of ``store_id``'s log after a seq: (store_id, after, limit).
READ_SQL = f"SELECT {EVENT_COLUMNS} FROM log WHERE store_id = ? AND seq > ? ORDER BY seq LIMIT ?"
#: The highest client_seq of a client in a store: (store_id, client_id).
LAST_CLIENT_SEQ_SQL = (
    "SELECT coalesce(max(client_seq), 0) FROM log WHERE store_id = ? AND client_id = ?"
)
_INSERT_SQL = f"INSERT INTO log (store_id, {EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
_FOREIGN_SQL = "SELECT EXISTS (SELECT 1 FROM log WHERE store_id = ? AND seq > ? AND client_id <> ?)"
_HELD_SQL = (
    f"SELECT {EVENT_COLUMNS} FROM log "
    "WHERE store_id = ? AND client_id = ? AND client_seq BETWEEN ? AND ?"
)


def valid_store_id(store_id: str) -> bool:
    """True for a usable store id: letters, digits, ``_ . -``, at most 64, not starting
    with a dot or a dash (so it is also a safe file and URL path name)."""
    return _STORE_ID.fullmatch(store_id) is not None


@attrs.frozen
class StoreInfo:
    """One store as the database knows it."""

    store_id: str
    server_id: str
    head: int


@attrs.frozen
class PushRequest:
    """A push to apply: ``client_id``'s ``push`` into store ``store_id``."""

    store_id: str
    client_id: str
    push: Push


class Sql(Protocol):
    """Runs statements inside the backend's open transaction."""

    def rows(self, sql: str, params: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
        """The rows of one query (``?`` placeholders)."""

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement run for each of ``rows``."""


def event_to_row(event: Event) -> tuple[int | None, str, int, str, str]:
    args = orjson.dumps(event.args).decode()
    return (event.seq, event.client_id, event.client_seq, event.name, args)


def row_to_event(row: Sequence[Any]) -> Event:
    seq, client_id, client_seq, name, args = row
    try:
        value = orjson.loads(args)
        if type(value) is not dict:
            raise ValueError("args must be a JSON object")
        return Event.from_json(name, value, client_id, client_seq, seq)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        # Written by an older trio_sync that accepted what JSON cannot hold (NaN).
        raise StoreCorrupt(
            f"event {client_id!r}/{client_seq} (seq {seq}) cannot be read back: {exc}"
        ) from None


def page_of(rows: Iterable[Sequence[Any]], max_bytes: int) -> list[Event]:
    """The events of ``rows`` (read with :data:`READ_SQL`) up to ``max_bytes`` of encoded
    size (bounded from above: name, args and :data:`EVENT_ENVELOPE_BYTES` each), but at
    least one: a page must make progress. 0: no byte bound."""
    events: list[Event] = []
    budget = max_bytes
    for row in rows:
        if max_bytes:
            budget -= len(row[3]) + len(row[4]) + EVENT_ENVELOPE_BYTES
            if events and budget < 0:
                break
        events.append(row_to_event(row))
    return events


def decide_group(
    sql: Sql, requests: Sequence[PushRequest], head_of: Callable[[str], int]
) -> tuple[list[PushDecision], dict[str, int]]:
    """Decides ``requests`` in order and appends what is accepted, through ``sql``.

    ``head_of`` gives each store's head when the group starts; the caller must make sure
    nobody else appends to those stores until its transaction ends (SQLite: one process
    owns the file; PostgreSQL: the stores' rows are locked).

    Returns the decisions, one per request, and the new head of every store appended to.
    """
    heads: dict[str, int] = {}
    decisions: list[PushDecision] = []
    for request in requests:
        head = heads.get(request.store_id)
        if head is None:
            head = head_of(request.store_id)
        decision = decide_push(request.push, request.client_id, _facts(sql, request, head))
        if isinstance(decision, Accept) and decision.new:
            sql.insert_many(
                _INSERT_SQL, [(request.store_id, *event_to_row(e)) for e in decision.new]
            )
            heads[request.store_id] = decision.new[-1].seq or head
        decisions.append(decision)
    return decisions, heads


def _facts(sql: Sql, request: PushRequest, head: int) -> PushFacts:
    store_id, client_id, push = request.store_id, request.client_id, request.push
    [(last,)] = sql.rows(LAST_CLIENT_SEQ_SQL, (store_id, client_id))
    [(foreign,)] = sql.rows(_FOREIGN_SQL, (store_id, push.parent, client_id))
    first, final = push.events[0].client_seq, push.events[-1].client_seq
    held = {
        event.client_seq: event
        for event in map(
            row_to_event, sql.rows(_HELD_SQL, (store_id, client_id, first, min(final, last)))
        )
    }
    return PushFacts(
        head=head, last_client_seq=int(last), foreign_after_parent=bool(foreign), held=held
    )


class HeadFeed(Protocol):
    """Announcements of appends made by any process (see ``PostgresStore.listen``)."""

    def wait(self, timeout: float) -> dict[str, int]:
        """The highest head announced per store within ``timeout`` seconds."""

    def close(self) -> None: ...


class ServerLog(Protocol):
    """What the server needs of its log; :class:`~trio_sync.store.ServerStore` (SQLite)
    and :class:`~trio_sync.store.PostgresStore` are the two implementations."""

    #: True when other processes append to the same log (the server must follow it).
    shared: bool

    @property
    def path(self) -> str:
        """Where the log is, for messages (a file, or a URL without its password)."""

    @property
    def server_id(self) -> str: ...

    @property
    def head(self) -> int: ...

    def store(self, store_id: str) -> StoreInfo | None: ...

    def store_count(self) -> int: ...

    def stores(self) -> list[StoreInfo]: ...

    def heads(self, store_ids: Sequence[str]) -> dict[str, int]: ...

    def create_store(self, store_id: str) -> StoreInfo: ...

    def read(
        self, after: int, limit: int, *, store_id: str = ..., max_bytes: int = ...
    ) -> list[Event]: ...

    def last_client_seq(self, client_id: str, *, store_id: str = ...) -> int: ...

    def apply_pushes(self, requests: Sequence[PushRequest]) -> list[PushDecision]: ...

    def check_writable(self) -> None: ...

    def listen(self) -> HeadFeed: ...

    def close(self) -> None: ...


def open_server_log(db: str) -> ServerLog:
    """Opens the server log ``db``: a SQLite file path, or a ``postgresql://`` URL (the
    scheme in any case; needs the ``postgres`` extra, imported only then).

    Raises:
        InvalidDatabase: ``db`` is neither (a URL of another scheme, a libpq key=value
            string): refused, no file is created.
        StoreError: As ``ServerStore.open`` or ``PostgresStore.open``.
    """
    from ._pg_connect import postgres_url_of

    url = postgres_url_of(db)
    if url is not None:
        from ._pg_connect import require_psycopg

        require_psycopg()
        from ._postgres import PostgresStore

        return PostgresStore.open(url)
    from ._server_store import ServerStore

    return ServerStore.open(db)


def store_for_target(target: str) -> str | None:
    """The store a request path names: "/" is the default store, "/<id>" the store <id>
    (a query string is ignored); None for anything else."""
    path = target.split("?", 1)[0].rstrip("/")
    if not path:
        return DEFAULT_STORE
    name = path[1:] if path.startswith("/") else None
    return name if name is not None and valid_store_id(name) else None
