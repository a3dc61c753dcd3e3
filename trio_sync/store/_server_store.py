"""The server's durable log: every event with its global position.

Pushes are applied in groups: :meth:`ServerStore.apply_pushes` decides and appends several
pushes in one transaction and one fsync, and the server acknowledges none of them before
that commit returns.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence

from ..protocol import Accept, Event, Push, PushDecision, PushFacts, decide_push
from ._sqlite import Database, SQLiteStore, ensure_directory, get_meta, set_meta


def _schema_v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, "
        "client_seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL, "
        "UNIQUE (client_id, client_seq))"
    )
    set_meta(conn, "server_id", uuid.uuid4().hex)


MIGRATIONS = [_schema_v1]


class ServerStore(SQLiteStore):
    """The server's SQLite log."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.server_id: str = db.read(lambda conn: get_meta(conn, "server_id"))
        self.head: int = db.read(
            lambda conn: conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        )

    @classmethod
    def open(cls, path: str) -> ServerStore:
        """Opens (creating if needed) the server log at ``path`` (":memory:" for tests).

        Raises:
            StoreInUse, StoreCorrupt, StoreVersionError, StoreMismatch: as for the client.
        """
        path = str(path)
        ensure_directory(path)
        db = Database(path, kind="server", migrations=MIGRATIONS)
        try:
            return cls(db)
        except BaseException:
            db.close()
            raise

    def read(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` events with seq > ``after``, in order."""
        return self._db.read(
            lambda conn: [
                self.row_to_event(row)
                for row in conn.execute(
                    f"SELECT {self.EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                )
            ]
        )

    def apply_pushes(self, pushes: Sequence[tuple[str, Push]]) -> list[PushDecision]:
        """Decides and applies ``(client_id, push)`` pairs in order, in one transaction.

        Returns one decision per push; accepted events are durable when this returns.
        """

        def write(conn: sqlite3.Connection) -> list[PushDecision]:
            head = self.head
            decisions: list[PushDecision] = []
            for client_id, push in pushes:
                decision = decide_push(push, client_id, self._facts(conn, client_id, push, head))
                if isinstance(decision, Accept) and decision.new:
                    new = decision.new
                    conn.executemany(
                        f"INSERT INTO events ({self.EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                        [self.event_to_row(e) for e in new],
                    )
                    head = new[-1].seq or head
                decisions.append(decision)
            return decisions

        decisions = self._db.write(write)
        for decision in decisions:  # only now is it durable: publish the new head
            if isinstance(decision, Accept) and decision.new:
                self.head = decision.new[-1].seq or self.head
        return decisions

    @staticmethod
    def _facts(conn: sqlite3.Connection, client_id: str, push: Push, head: int) -> PushFacts:
        last = conn.execute(
            "SELECT coalesce(max(client_seq), 0) FROM events WHERE client_id = ?", (client_id,)
        ).fetchone()[0]
        foreign = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events WHERE seq > ? AND client_id != ?)",
            (push.parent, client_id),
        ).fetchone()[0]
        first, final = push.events[0].client_seq, push.events[-1].client_seq
        held = {
            event.client_seq: event
            for event in map(
                SQLiteStore.row_to_event,
                conn.execute(
                    f"SELECT {SQLiteStore.EVENT_COLUMNS} FROM events "
                    "WHERE client_id = ? AND client_seq BETWEEN ? AND ?",
                    (client_id, first, min(final, last)),
                ),
            )
        }
        return PushFacts(
            head=head, last_client_seq=last, foreign_after_parent=bool(foreign), held=held
        )
