"""The files' pure model: what a reconcile writes for rows left behind."""

from __future__ import annotations

from trio_sync.files import FileInfo, TransferState
from trio_sync.files._model import rows_for_own_contents

CURRENT, NEVER_RECORDED = "c" * 64, "n" * 64


def test_rows_left_for_contents_never_recorded_go_back_to_our_current_contents() -> None:
    ours = FileInfo("f", "x", CURRENT, 10, author="A")
    assert rows_for_own_contents(ours, TransferState("done", NEVER_RECORDED), "A") == [
        ("upload", TransferState("queued", CURRENT)),
        ("download", TransferState("done", CURRENT)),
    ]
    # A download row already for the current contents (or none) is left as it is.
    assert rows_for_own_contents(ours, TransferState("done", CURRENT), "A") == [
        ("upload", TransferState("queued", CURRENT))
    ]
    assert rows_for_own_contents(ours, None, "A") == [("upload", TransferState("queued", CURRENT))]


def test_another_clients_contents_won_and_our_row_goes() -> None:
    theirs = FileInfo("f", "x", CURRENT, 10, author="B")
    assert rows_for_own_contents(theirs, TransferState("done", NEVER_RECORDED), "A") is None


def test_a_file_fact_whose_size_cannot_be_its_hashs_is_skipped() -> None:
    # Tried (a hostile review): an event committed by hand said the empty contents were
    # 5 bytes. Every client then waited for ever for an upload nobody could make.
    from trio_sync.files._model import EMPTY_HASH, FileTable
    from trio_sync.protocol import Event

    def created(file_id: str, content_hash: str, size: int) -> Event:
        args = {"id": file_id, "path": "p", "hash": content_hash, "size": size}
        return Event("file.created", args, "C", 1)

    table = FileTable()
    assert table.apply(created("empty-but-5", EMPTY_HASH, 5)) is None
    assert table.apply(created("nothing-but-hashed", CURRENT, 0)) is None
    assert table.apply(created("empty", EMPTY_HASH, 0)) == "empty"
    assert table.apply(created("ten", CURRENT, 10)) == "ten"
    assert sorted(table.files) == ["empty", "ten"]
