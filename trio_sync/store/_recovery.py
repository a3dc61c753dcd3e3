"""Start-up recovery of a damaged client store: moved aside, pending events salvaged.

A client store that fails SQLite's integrity check cannot be trusted, but the confirmed
log in it is a copy of the server's, so nothing of it is lost by rebuilding it from the
server. Only the pending events are this device's alone: every one that can still be read
is carried into the new store, with its client_seq, so the server recognises the ones it
already holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import attrs
import orjson

from .._errors import StoreCorrupt, StoreDamaged, StoreError
from . import _lineage
from ._client_store import ClientStore, commit_time_column
from ._names import interrupted_move
from ._sqlite import is_memory, opened_here, set_meta

T = TypeVar("T")
R = TypeVar("R")


@attrs.frozen
class StoreRecovery:
    """What start-up recovery did.

    Attributes:
        moved_to: Where the damaged file now is.
        salvaged: Pending events carried into the new store.
        reason: Why the store was found damaged.
    """

    moved_to: str
    salvaged: int
    reason: str


@attrs.frozen
class _Salvage:
    client_id: str | None
    server_id: str | None
    #: (client_seq, event) in client_seq order.
    pending: list[tuple[int, _lineage.SavedEvent]]


def open_client_store(
    path: str, client_id: str | None = None, *, now: float | None = None
) -> tuple[ClientStore, StoreRecovery | None]:
    """Opens a client store, recovering it first if it is damaged.

    Raises:
        StoreError: As :meth:`ClientStore.open` for anything recovery cannot fix (in use,
            another client's, a newer schema, not a trio_sync store at all).
    """
    path = str(path)
    opened = open_or_rebuild(
        path,
        partial(ClientStore.open, path, client_id),
        partial(_rebuild_client_store, path, client_id, now),
    )
    return (opened, None) if isinstance(opened, ClientStore) else opened


def _rebuild_client_store(
    path: str, client_id: str | None, now: float | None, damaged: Damaged
) -> tuple[ClientStore, StoreRecovery]:
    reason = damaged.reason
    salvage = _salvage(path)
    moved_to = move_aside(path, now, damaged.moved_to)
    known_id = client_id or salvage.client_id
    store = ClientStore.open(path, known_id)
    # In order from the first readable one. An unreadable row leaves a gap, and the
    # events after it are numbered on from before it: the server takes a client's events
    # only in order, so it holds none after a gap it never saw. With the id lost, the
    # store has a new one, which the server has never seen: its events start at 1.
    kept = [event for _, event in salvage.pending]
    if kept:
        first = salvage.pending[0][0] if known_id is not None else 1
        store._db.write(
            lambda conn: _lineage.replace_lineage(
                conn, keep=kept, client_id=store.client_id, first_client_seq=first
            )
        )
    if salvage.server_id is not None:
        server_id = salvage.server_id
        store._db.write(lambda conn: set_meta(conn, "server_id", server_id))
    return store, StoreRecovery(moved_to=moved_to, salvaged=len(kept), reason=reason)


@attrs.frozen
class Damaged:
    """Why the store at a path is damaged, and the second name a move aside that was
    interrupted already gave it (None: none)."""

    reason: str
    moved_to: str | None = None


def open_or_rebuild(
    path: str, open_store: Callable[[], T], rebuild: Callable[[Damaged], R]
) -> T | R:
    """Opens the store at ``path`` with ``open_store()``; if it is a damaged store,
    ``rebuild`` moves it aside and makes a new one. Recoveries of one path run one at a
    time (a lock beside it, ``.recovering``), and each looks again first: two processes
    that found the store damaged together do not both move it (the second would move the
    first's new store); the second opens the new store, or finds it in use.

    Raises:
        StoreError: As :func:`_open_unless_damaged`.
    """
    opened = _open_unless_damaged(path, open_store)
    if not isinstance(opened, Damaged):
        return opened
    with _recovery_lock(path):
        opened = _open_unless_damaged(path, open_store)
        if not isinstance(opened, Damaged):
            return opened
        return rebuild(opened)


@contextlib.contextmanager
def _recovery_lock(path: str) -> Iterator[None]:
    try:
        fd = os.open(os.path.realpath(path) + ".recovering", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"store {path!r} is damaged and cannot be recovered: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another process's recovery to end
        yield
    finally:
        os.close(fd)


def _open_unless_damaged(path: str, open_store: Callable[[], T]) -> T | Damaged:
    """Opens the store at ``path`` with ``open_store()``, or says why it is a damaged
    store (to move aside with :func:`move_aside`).

    Raises:
        StoreError: What ``open_store`` raises for anything else: in use, a newer schema,
            a file that was never a trio_sync store (never taken for a damaged one).
    """
    moved_to = interrupted_move(path)
    if moved_to is not None:
        # A recovery killed between giving the damaged file its second name and removing
        # the first: finished now (the file is still the damaged one).
        reason = f"a recovery of this damaged store was interrupted; finished now ({moved_to})"
        return Damaged(reason, moved_to)
    try:
        return open_store()
    except StoreDamaged as exc:
        if is_memory(path):
            raise
        return Damaged(str(exc))
    except StoreCorrupt as exc:
        if not _was_a_store(path):
            raise  # some other file: never moved
        return Damaged(str(exc))


def move_aside(path: str, now: float | None = None, second_name: str | None = None) -> str:
    """Moves the damaged store at ``path`` (with its ``-wal`` and ``-shm``) to
    ``<path>.corrupt.<UTC time>`` (or ``second_name``, given it already: an interrupted
    move is finished); returns where it went."""
    # The file itself, not a symbolic link to it: the new store is made where it was,
    # and the link goes on naming it.
    path = os.path.realpath(path)
    if second_name is None:
        stamp = _lineage.utc_stamp(time.time() if now is None else now)
        # A second name first, then the old one dropped: a damaged file of the same
        # second already moved aside is never replaced.
        second_name = _lineage.link_to_free_name(path, f"{path}.corrupt.{stamp}")
    os.unlink(path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, second_name + suffix)
    return second_name


#: Part of every trio_sync store's schema, kept in its first page as SQL text.
_SCHEMA_SIGN = b"CREATE TABLE store_kind"


def _was_a_store(path: str) -> bool:
    """A file SQLite cannot read at all that is what is left of a trio_sync store, not
    someone's notes: trio_sync opened a store at this path (:func:`opened_here`), the
    file still holds the schema of one (a store deleted and replaced by your notes left
    its lock) and its size is whole database pages."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            start = file.read(64 * 1024)
    except OSError:
        return False
    if start.startswith(b"SQLite format 3\x00"):
        return False  # SQLite reads it: another program's database, not a damaged store
    return size > 0 and size % 512 == 0 and _SCHEMA_SIGN in start and opened_here(path)


def _salvage(path: str) -> _Salvage:
    """Whatever can still be read: the identity and the pending rows, one at a time."""
    client_id = server_id = None
    pending: list[tuple[int, _lineage.SavedEvent]] = []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return _Salvage(None, None, [])
    try:
        for key in ("client_id", "server_id"):
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                continue
            if row is not None and isinstance(row[0], str):
                if key == "client_id":
                    client_id = row[0]
                else:
                    server_id = row[0]
        try:
            seqs = [row[0] for row in conn.execute("SELECT client_seq FROM pending")]
        except sqlite3.Error:
            seqs = []
        try:
            when = commit_time_column(conn)
        except sqlite3.Error:
            when = "NULL"
        for client_seq in sorted(set(seqs)):
            try:
                row = conn.execute(
                    f"SELECT name, args, {when} FROM pending WHERE client_seq = ?",
                    (client_seq,),
                ).fetchone()
                args = orjson.loads(row[1])
            except (sqlite3.Error, orjson.JSONDecodeError, TypeError):
                continue
            if isinstance(row[0], str) and isinstance(args, dict):
                pending.append((client_seq, _lineage.SavedEvent(row[0], args, row[2])))
    finally:
        conn.close()
    return _Salvage(client_id, server_id, pending)
