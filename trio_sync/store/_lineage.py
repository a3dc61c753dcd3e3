"""Starting a client store afresh: the pending events saved to a JSON-lines file first,
then the whole lineage replaced in one transaction.

Used by ``Client.reset()`` (the server was rebuilt, or this client id was used by another
store) and by start-up recovery (a damaged store moved aside). The order makes a crash at
any moment safe: before the transaction, the old store is intact and the file is a spare
copy; after it, the new store holds the kept events. Nothing pending is lost in between.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import orjson

from .._errors import StoreError
from ..protocol import Event
from ._sqlite import set_meta


@attrs.frozen
class SavedEvent:
    """A pending event as saved: what the application committed, and when."""

    name: str
    args: dict[str, object]
    committed_at: float | None = None


def backup_path(store_path: str, now: float) -> str:
    """Where the pending events of ``store_path`` are saved: beside it, stamped in UTC
    (:func:`write_jsonl` adds ``-2``, ``-3``... if that name is taken)."""
    return f"{store_path}.pending-{utc_stamp(now)}.jsonl"


def utc_stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def link_to_free_name(source: str, wanted: str) -> str:
    """Gives ``source`` a second name: ``wanted``, or ``wanted`` with ``-2``, ``-3``...
    before its extension if taken. Never replaces a file (two saves in one second must
    both survive). Returns the name used.

    Raises:
        OSError: The link could not be made.
    """
    stem, extension = os.path.splitext(wanted) if wanted.endswith(".jsonl") else (wanted, "")
    candidate, number = wanted, 1
    while True:
        try:
            os.link(source, candidate)
            return candidate
        except FileExistsError:
            number += 1
            candidate = f"{stem}-{number}{extension}"


def write_jsonl(path: str, events: Iterable[Event], committed_at: dict[int, float]) -> str:
    """Writes ``events`` durably as JSON lines (a temporary name, fsynced, then linked to
    ``path`` or, if a file has that name, to the next free variant of it).

    Returns the name written.

    Raises:
        StoreError: The file could not be written (nothing was changed).
    """
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "wb") as file:
            for event in events:
                line = {
                    "client_id": event.client_id,
                    "client_seq": event.client_seq,
                    "name": event.name,
                    "args": dict(event.args),
                    "committed_at": committed_at.get(event.client_seq),
                }
                file.write(orjson.dumps(line) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        path = link_to_free_name(temporary, path)
        os.unlink(temporary)
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise StoreError(f"cannot save the pending events to {path!r}: {exc}") from None
    return path


def read_jsonl(path: str | Path) -> list[SavedEvent]:
    """Reads events saved by :func:`write_jsonl` (lines that cannot be read are skipped).

    Raises:
        StoreError: The file cannot be opened.
    """
    saved: list[SavedEvent] = []
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read saved events from {str(path)!r}: {exc}") from None
    for line in text.splitlines():
        try:
            item = orjson.loads(line)
            saved.append(SavedEvent(item["name"], item["args"], item.get("committed_at")))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line: the file was being written when it died
    return saved


def replace_lineage(
    conn: sqlite3.Connection,
    *,
    keep: Sequence[SavedEvent],
    client_id: str,
    first_client_seq: int,
) -> None:
    """In the caller's transaction: forgets the confirmed log, the server identity and the
    cursors, and records ``keep`` as pending from ``first_client_seq`` on."""
    conn.execute("DELETE FROM confirmed")
    conn.execute("DELETE FROM pending")
    conn.executemany(
        "INSERT INTO pending (client_seq, name, args, committed_at) VALUES (?, ?, ?, ?)",
        [
            (
                first_client_seq + i,
                event.name,
                orjson.dumps(event.args).decode(),
                event.committed_at,
            )
            for i, event in enumerate(keep)
        ],
    )
    conn.execute("DELETE FROM meta WHERE key IN ('server_id', 'last_synced_at')")
    set_meta(conn, "client_id", client_id)
    set_meta(conn, "upstream_head", 0)
    set_meta(conn, "acked_through", first_client_seq - 1)
    set_meta(conn, "next_client_seq", first_client_seq + len(keep))
