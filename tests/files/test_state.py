"""The durable transfer state table and its in-memory mirror (no event loop needed)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from trio_sync import StoreFull
from trio_sync._errors import StoreError
from trio_sync.files import TransferState
from trio_sync.files._state import TransferStateStore, inspect_transfers


def _store(tmp_path: Path) -> TransferStateStore:
    return TransferStateStore(str(tmp_path / "c.sqlite3.files"))


def test_a_reader_holding_rows_sees_one_snapshot_while_a_thread_writes(tmp_path: Path) -> None:
    # Tried: iterate ``rows`` (as the status counts and the garbage collector do on the
    # loop) while another thread writes hundreds of rows. An in-place mirror raised
    # "dictionary changed size during iteration" at about 1,000 files.
    store = _store(tmp_path)
    store.set_many([((f"f{i}", "upload"), TransferState("queued", "h")) for i in range(50)])
    snapshot = store.rows

    def writer() -> None:
        for i in range(50, 400):
            store.set_many([((f"f{i}", "upload"), TransferState("queued", "h"))])

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while thread.is_alive():
        seen = sum(1 for _ in snapshot.items())
    thread.join()
    assert seen == 50 and len(snapshot) == 50
    assert len(store.rows) == 400
    store.close()


def test_failed_uploads_follow_every_write_and_survive_a_reopen(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.set_many(
        [
            (("a", "upload"), TransferState("error", "h1", 3, "refused: quota")),
            (("b", "upload"), TransferState("queued", "h2")),
            (("c", "download"), TransferState("error", "h3", 1, "missing")),
        ]
    )
    assert {k: v.last_error for k, v in store.failed_uploads.items()} == {"a": "refused: quota"}
    store.set_many([(("b", "upload"), TransferState("error", "h2", 1, "timeout"))])
    assert sorted(store.failed_uploads) == ["a", "b"]
    assert store.update(("a", "upload"), TransferState("queued", "h1")) is True
    store.forget([(("b", "upload"), TransferState("error", "h2"))])
    assert store.failed_uploads == {}
    store.set_many([(("a", "upload"), TransferState("error", "h1", 4, "refused: quota"))])
    store.close()

    reopened = _store(tmp_path)
    assert list(reopened.failed_uploads) == ["a"]
    assert reopened.get("c", "download") == TransferState("error", "h3", 1, "missing")
    reopened.close()


def test_update_and_forget_change_only_rows_still_for_the_same_contents(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.set_many([(("a", "upload"), TransferState("queued", "new"))])
    version = store.version
    # A worker reporting on contents replaced meanwhile changes nothing.
    assert store.update(("a", "upload"), TransferState("done", "old")) is False
    store.forget([(("a", "upload"), TransferState("in_progress", "old"))])
    assert store.get("a", "upload") == TransferState("queued", "new")
    assert store.version == version
    store.close()


def test_a_failed_write_changes_neither_the_file_nor_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: the transaction fails after its statements ran (a full disk at COMMIT).
    # The mirror was updated inside the transaction, so it said what the file did not.
    store = _store(tmp_path)
    real = store._db.write

    def full_at_commit(work: Callable[[sqlite3.Connection], object]) -> object:
        def then_full(conn: sqlite3.Connection) -> object:
            work(conn)
            raise StoreFull("disk full (injected at commit)")

        return real(then_full)

    monkeypatch.setattr(store._db, "write", full_at_commit)
    with pytest.raises(StoreFull):
        store.set_many([(("a", "upload"), TransferState("queued", "h"))])
    assert store.rows == {} and store.failed_uploads == {} and store.version == 0
    monkeypatch.undo()
    # Not durable ("in_progress"): atomic all the same, and mirrored once written.
    store.set_many([(("a", "upload"), TransferState("queued", "h"))])
    assert store.update(("a", "upload"), TransferState("in_progress", "h")) is True
    store.close()
    reopened = _store(tmp_path)
    assert reopened.rows == {("a", "upload"): TransferState("in_progress", "h")}
    reopened.close()


def test_set_if_contents_unchanged_writes_only_rows_still_for_the_contents_seen(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    try:
        old = TransferState("in_progress", "a" * 64)
        for key in ("f1", "f2", "f5"):
            store.set_many([((key, "download"), old)])
        # Since read: f1 was written for other contents (a save's row, say); f5's
        # transfer was stopped and put its "queued" back (its status alone moved); f2
        # and f3 were not touched.
        newer = TransferState("done", "b" * 64)
        store.set_many([(("f1", "download"), newer)])
        store.set_many([(("f5", "download"), TransferState("queued", "a" * 64))])
        wanted = TransferState("queued", "c" * 64)
        written = store.set_if_contents_unchanged(
            [
                (("f1", "download"), wanted, old),  # other contents since: left alone
                (("f2", "download"), wanted, old),  # as seen: written
                (("f3", "download"), wanted, None),  # still absent: written
                (("f4", "download"), wanted, old),  # absent, but seen present: left alone
                (("f5", "download"), wanted, old),  # same contents, status moved: written
            ]
        )
        assert written == 3
        assert store.get("f1", "download") == newer
        assert store.get("f2", "download") == wanted == store.get("f3", "download")
        assert store.get("f4", "download") is None
        assert store.get("f5", "download") == wanted
    finally:
        store.close()


def test_inspect_counts_each_direction_by_status_while_the_client_has_it_open(
    tmp_path: Path,
) -> None:
    # For `trio-sync status --store`, which said nothing about files (a hostile review).
    assert inspect_transfers(str(tmp_path / "c.sqlite3.files")) is None  # none yet
    store = _store(tmp_path)
    store.set_many(
        [
            (("f1", "upload"), TransferState("done", "h1")),
            (("f2", "upload"), TransferState("queued", "h2")),
            (("f3", "upload"), TransferState("error", "h3", 10, "over the server's limit")),
            (("f4", "download"), TransferState("in_progress", "h4")),
        ]
    )
    summary = inspect_transfers(str(tmp_path / "c.sqlite3.files"))  # still open here
    assert summary is not None
    assert summary.uploads == {"done": 1, "queued": 1, "error": 1}
    assert summary.downloads == {"in_progress": 1}
    assert summary.upload_error == "over the server's limit"
    store.close()
    (tmp_path / "other.files").write_bytes(b"not a database at all, " * 100)
    with pytest.raises(StoreError, match="cannot read the transfer state"):
        inspect_transfers(str(tmp_path / "other.files"))
