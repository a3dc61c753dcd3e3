"""The client's durable store: confirmed log, pending events, cursor and identity.

The API is synchronous on purpose: the client runtime decides whether a call runs in a
worker thread (production, so an fsync never blocks the event loop) or inline (the
simulator, where a thread would break determinism).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import Callable, Sequence

import attrs
import orjson

from .._errors import StoreCorrupt, StoreError, StoreMismatch
from ..protocol import (
    DEFAULT_LIMITS,
    MAX_CLIENT_ID_LENGTH,
    Event,
    SyncState,
    WireLimits,
    check_identifier,
    plain_str,
)
from . import _lineage
from ._names import refuse_other_names
from ._sqlite import (
    Database,
    SQLiteStore,
    ensure_directory,
    get_meta,
    is_memory,
    set_meta,
    translate_errors,
)

#: A write a client's writer batches with others: a function of the connection.
Write = Callable[[sqlite3.Connection], object]


def _schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.execute(
        "CREATE TABLE confirmed (seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
        "client_seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE pending (client_seq INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "args TEXT NOT NULL)"
    )


def _schema_v2(conn: sqlite3.Connection) -> None:
    # When each pending event was committed (wall clock), for the age of the oldest one
    # that ``trio-sync status`` shows. Older rows have none.
    conn.execute("ALTER TABLE pending ADD COLUMN committed_at REAL")


MIGRATIONS = [_schema_v1, _schema_v2]


class ClientStore(SQLiteStore):
    """One client's SQLite store.

    Raises (from ``open``):
        StoreInUse: Another process has the store open.
        StoreCorrupt: The file is damaged or not a trio_sync client store.
        StoreVersionError: The file was written by a newer trio_sync.
        StoreMismatch: The store belongs to another client id.
        ValueError: ``client_id`` is not a usable one (an empty string, say).
    """

    def __init__(self, db: Database, client_id: str) -> None:
        super().__init__(db)
        self.client_id = client_id

    @classmethod
    def open(cls, path: str, client_id: str | None = None) -> ClientStore:
        """Opens (creating if needed) the store at ``path`` (":memory:" for a test store).

        ``client_id`` None means: the id recorded in the store, or a new random one.
        """
        path = str(path)
        if client_id is not None:
            client_id = plain_str(client_id)  # type: ignore[assignment]
            check_identifier(client_id, "client_id", MAX_CLIENT_ID_LENGTH)
        ensure_directory(path)
        db = Database(path, kind="client", migrations=MIGRATIONS, manual_checkpoints=True)
        try:
            recorded = db.read(lambda conn: get_meta(conn, "client_id"))
            if recorded is None:
                chosen = client_id if client_id is not None else uuid.uuid4().hex
                db.write(lambda conn: set_meta(conn, "client_id", chosen))
                recorded = chosen
            elif client_id is not None and client_id != recorded:
                raise StoreMismatch(
                    f"store {path!r} belongs to client {recorded!r}, not {client_id!r}"
                )
            return cls(db, recorded)
        except BaseException:
            db.close()
            raise

    # --- reads ------------------------------------------------------------------------

    def load_state(self) -> SyncState:
        """Rebuilds the sync state from disk.

        Raises:
            StoreCorrupt: The recorded state breaks an invariant.
        """

        def load(conn: sqlite3.Connection) -> SyncState:
            head = get_meta(conn, "upstream_head") or 0
            acked = get_meta(conn, "acked_through") or 0
            next_seq = get_meta(conn, "next_client_seq") or 1
            limits = get_meta(conn, "server_limits")
            pending = [
                self.row_to_event((None, self.client_id, client_seq, name, args))
                for client_seq, name, args in conn.execute(
                    "SELECT client_seq, name, args FROM pending ORDER BY client_seq"
                )
            ]
            try:
                return SyncState(
                    self.client_id,
                    upstream_head=head,
                    pending=pending,
                    acked_through=min(acked, next_seq - 1),
                    next_client_seq=next_seq,
                    limits=WireLimits(**orjson.loads(limits)) if limits else DEFAULT_LIMITS,
                )
            except (AssertionError, ValueError, TypeError) as exc:
                raise StoreCorrupt(f"store {self.path!r} holds an invalid state: {exc}") from None

        return self._db.read(load)

    @property
    def server_id(self) -> str | None:
        """The server identity this client last synced with."""
        value: str | None = self._db.read(lambda conn: get_meta(conn, "server_id"))
        return value

    def confirmed_events(self, after: int = 0, limit: int | None = None) -> list[Event]:
        """Confirmed events with seq > ``after``, in server order."""
        return self._confirmed_where(
            "seq > ? ORDER BY seq LIMIT ?", (after, -1 if limit is None else limit)
        )

    def pending_events(self) -> list[Event]:
        """Own events not yet confirmed, in commit order."""
        return list(self.load_state().pending)

    def own_confirmed_after(self, client_seq: int) -> list[Event]:
        """This client's confirmed events after ``client_seq``, in commit order: after a
        server lost events (restored from an older backup), the ones it no longer holds."""
        return self._confirmed_where(
            "client_id = ? AND client_seq > ? ORDER BY client_seq", (self.client_id, client_seq)
        )

    def _confirmed_where(self, condition: str, params: tuple[object, ...]) -> list[Event]:
        """Confirmed events matching ``condition`` (SQL after WHERE), in its order."""
        query = f"SELECT {self.EVENT_COLUMNS} FROM confirmed WHERE {condition}"
        return self._db.read(
            lambda conn: [self.row_to_event(row) for row in conn.execute(query, params)]
        )

    def pending_committed_at(self) -> dict[int, float]:
        """When each pending event was committed (wall clock), by client_seq; events
        committed before trio_sync kept the time have none."""
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT client_seq, committed_at FROM pending WHERE committed_at IS NOT NULL"
            ).fetchall()
        )
        return {client_seq: at for client_seq, at in rows}

    # --- a new lineage -------------------------------------------------------------------

    def reset_lineage(
        self,
        *,
        keep_pending: bool,
        first_client_seq: int,
        now: float,
        keep_if: Callable[[Event], bool] = lambda event: True,
        lost: Sequence[Event] = (),
    ) -> tuple[str | None, int]:
        """Starts this store afresh: no confirmed log, no server identity, head 0; with
        ``keep_pending``, the pending events for which ``keep_if`` holds again, numbered
        from ``first_client_seq``, after ``lost``: this client's confirmed events the
        server no longer holds (see :meth:`own_confirmed_after`), which become pending
        again.

        Those events are saved to a JSON-lines file beside the store first (a file store
        with such events only), then the store changes in one transaction: a crash at any
        moment loses nothing.

        Returns:
            The file the pending events were saved to (None: nothing to save, or an
            in-memory store) and how many events were kept.

        Raises:
            StoreError: The file or the store could not be written; the store is as it was.
        """
        events = [*lost, *self.load_state().pending]
        committed_at = self.pending_committed_at()
        saved_to = None
        if events and not is_memory(self.path):
            saved_to = _lineage.write_jsonl(
                _lineage.backup_path(self.path, now), events, committed_at
            )
        keep = [
            _lineage.SavedEvent(
                event.name,
                dict(event.args),
                None if event.seq is not None else committed_at.get(event.client_seq),
            )
            for event in (events if keep_pending else ())
            if keep_if(event)
        ]
        self._db.write(
            lambda conn: _lineage.replace_lineage(
                conn, keep=keep, client_id=self.client_id, first_client_seq=first_client_seq
            )
        )
        return saved_to, len(keep)

    # --- writes -----------------------------------------------------------------------
    #
    # Each kind of write is a ``Write`` (a function of the connection), so that the client's
    # writer can run several in one transaction (``write_batch``); the methods below run
    # one on its own.

    def pending_write(self, events: Sequence[Event], committed_at: float | None = None) -> Write:
        """Records new local commits (consecutive client_seqs, in order), committed at
        wall-clock time ``committed_at``."""
        rows = [(e.client_seq, e.name, self.event_to_row(e)[4], committed_at) for e in events]
        next_seq = events[-1].client_seq + 1

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO pending (client_seq, name, args, committed_at) VALUES (?, ?, ?, ?)",
                rows,
            )
            set_meta(conn, "next_client_seq", next_seq)

        return write

    def upstream_write(self, applied: Sequence[Event], confirmed_own: Sequence[Event]) -> Write:
        """Appends merged upstream events and retires the confirmed own ones."""
        rows = [self.event_to_row(e) for e in applied]
        last_own = confirmed_own[-1].client_seq if confirmed_own else None
        head = applied[-1].seq if applied else None

        def write(conn: sqlite3.Connection) -> None:
            if not rows:
                return
            conn.executemany(
                f"INSERT INTO confirmed ({self.EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows
            )
            if last_own is not None:
                conn.execute("DELETE FROM pending WHERE client_seq <= ?", (last_own,))
            set_meta(conn, "upstream_head", head)

        return write

    @staticmethod
    def ack_write(acked_through: int) -> Write:
        """Records the highest client_seq the server acknowledged. It need not be durable:
        after a crash, events acknowledged but not recorded are pushed again, and the server
        answers with the positions it already gave them."""
        return lambda conn: set_meta(conn, "acked_through", acked_through)

    @staticmethod
    def synced_write(at: float) -> Write:
        """Records when the client was last synced (shown by ``trio-sync status``)."""
        return lambda conn: set_meta(conn, "last_synced_at", at)

    @property
    def last_synced_at(self) -> float | None:
        """Wall-clock time the client was last seen synced (None: never)."""
        value = self._db.read(lambda conn: get_meta(conn, "last_synced_at"))
        return None if value is None else float(value)

    def write_batch(self, writes: Sequence[Write], *, durable: bool) -> list[object]:
        """Runs ``writes`` in one transaction, each in its own savepoint (see
        :meth:`Database.write_batch`); fsynced when ``durable``."""
        return self._db.write_batch(writes, durable=durable)

    def checkpoint(self) -> None:
        """Copies the write-ahead log into the database file (it may fsync: call it where
        that does not block anyone)."""
        self._db.checkpoint()

    def append_pending(self, event: Event) -> None:
        """Durably records a new local commit (fsynced before this returns)."""
        self._db.write(self.pending_write([event]))

    def apply_upstream(self, applied: Sequence[Event], confirmed_own: Sequence[Event]) -> None:
        """Durably appends merged upstream events and retires the confirmed own ones."""
        self._db.write(self.upstream_write(applied, confirmed_own))

    def record_ack(self, acked_through: int) -> None:
        """Durably records the highest client_seq the server acknowledged."""
        self._db.write(self.ack_write(acked_through))

    def record_server_id(self, server_id: str) -> None:
        """Remembers the server identity this client syncs with."""
        self._db.write(lambda conn: set_meta(conn, "server_id", server_id))

    def record_limits(self, limits: WireLimits) -> None:
        """Remembers the limits the server announced (commits made offline follow them)."""
        text = orjson.dumps(attrs.asdict(limits)).decode()
        self._db.write(lambda conn: set_meta(conn, "server_limits", text))


def commit_time_column(conn: sqlite3.Connection) -> str:
    """What to select for a pending event's commit time: its column, or NULL in a store
    from before schema v2, which kept none (read-only readers meet such stores too).

    Raises:
        sqlite3.Error: The table cannot be read.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(pending)")}
    return "committed_at" if "committed_at" in columns else "NULL"


@attrs.frozen
class StoreSummary:
    """What a client store holds, read without opening it for sync (``trio-sync status``).

    Attributes mirror the status: ``last_synced_at`` and ``oldest_pending_at`` are
    wall-clock times (None: never / unknown).
    """

    path: str
    client_id: str | None
    server_id: str | None
    upstream_head: int
    confirmed: int
    pending: int
    acked_through: int
    next_client_seq: int
    oldest_pending_at: float | None
    last_synced_at: float | None
    schema_version: int
    size_bytes: int


def _open_read_only(
    path: str, *, immutable: bool
) -> tuple[sqlite3.Connection, tuple[object, ...] | None]:
    """Opens ``path`` read-only, starts one read transaction (every fact from one
    state) and reads its kind (the first read is where SQLite finds out whether it can
    read the file at all).

    ``immutable``: the database file alone, with no ``-shm`` made beside it (right for a
    store closed cleanly, with no ``-wal``, while nobody writes it; also on read-only
    media); else its write-ahead log too, through a ``-shm`` file SQLite creates if it is
    missing (on read-only media it cannot).

    Raises:
        StoreError: It cannot be opened (with why).
        StoreCorrupt: It is not a trio_sync client store.
    """
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))
    mode = "mode=ro&immutable=1" if immutable else "mode=ro"
    conn = sqlite3.connect(f"{uri}?{mode}", uri=True)
    try:
        conn.execute("BEGIN")
        return conn, conn.execute("SELECT kind FROM store_kind").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        logged = os.path.exists(f"{path}-wal")
        if logged and not immutable and "unable to open" in str(exc):
            raise StoreError(
                f"cannot read {path!r}: it has a write-ahead log ({path}-wal) and SQLite "
                f"cannot create {path}-shm beside it to read that log (read-only media or "
                "folder?); copy the store's files to a writable folder and read the copy"
            ) from None
        if "unable to open" in str(exc):
            raise StoreError(f"cannot read {path!r}: {exc}") from None
        raise StoreCorrupt(f"{path!r} is not a trio_sync client store ({exc})") from None


def inspect_store(path: str) -> StoreSummary:
    """Reads a client store's facts read-only, without its lock: it works while the
    application has the store open, and changes nothing.

    A store closed cleanly (no ``-wal``) is read from its database file alone, which
    makes no ``-wal`` or ``-shm`` beside it; if the file changed meanwhile (an
    application opened the store and wrote), it is read again through its log.

    Raises:
        StoreError: No file at ``path``, or it cannot be read.
        StoreCorrupt: It is not a trio_sync client store, or it is damaged.
    """
    if not os.path.isfile(path):
        raise StoreError(f"no client store at {path!r}")
    with translate_errors(path):
        # Read under another name than the writer's, the state may miss what is in its
        # write-ahead log (and SQLite would make a -wal and -shm beside this one).
        refuse_other_names(path)
        before = _unlogged_state(path)
        if before is not None:
            try:
                summary = _summary(path, immutable=True)
            except (StoreError, sqlite3.Error):
                if _unlogged_state(path) == before:
                    raise
            else:
                if _unlogged_state(path) == before:
                    return summary
        return _summary(path, immutable=False)


def _unlogged_state(path: str) -> tuple[int, int, int] | None:
    """The database file's identity, size and last change while it has no ``-wal``
    beside it (None: it has one, or it is gone)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if os.path.exists(f"{path}-wal"):
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _summary(path: str, *, immutable: bool) -> StoreSummary:
    conn, kind = _open_read_only(path, immutable=immutable)
    try:
        if kind is None or kind[0] != "client":
            raise StoreCorrupt(f"{path!r} is not a trio_sync client store")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        when = commit_time_column(conn)
        oldest = conn.execute(f"SELECT min({when}) FROM pending").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM pending").fetchone()[0]
        confirmed = conn.execute("SELECT count(*) FROM confirmed").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise StoreCorrupt(f"{path!r} is not a trio_sync client store ({exc})") from None
    finally:
        conn.close()
    return StoreSummary(
        path=path,
        client_id=meta.get("client_id"),
        server_id=meta.get("server_id"),
        upstream_head=int(meta.get("upstream_head") or 0),
        confirmed=confirmed,
        pending=pending,
        acked_through=int(meta.get("acked_through") or 0),
        next_client_seq=int(meta.get("next_client_seq") or 1),
        oldest_pending_at=oldest,
        last_synced_at=meta.get("last_synced_at"),
        schema_version=version,
        size_bytes=os.path.getsize(path),
    )
