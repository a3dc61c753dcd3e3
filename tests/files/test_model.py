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


def test_metadata_is_counted_and_nested_as_it_would_be_written_out() -> None:
    # Tried (a third review): 100,000 levels of nesting took 17.5 s and ran out of memory
    # (each level's path held at once) before the event's depth check could refuse them;
    # and a fixed cap of 1,000,000 values refused metadata a server allowing 32 MiB
    # events takes.
    import pytest

    from trio_sync import InvalidEvent
    from trio_sync.files._model import check_metadata

    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"d": deep}
    with pytest.raises(InvalidEvent, match="nests deeper than 64 levels"):
        check_metadata(deep, 1 << 20)
    wide = {"a": [0] * 1_100_000}
    assert check_metadata(wide, 32 << 20) == wide
    with pytest.raises(InvalidEvent, match="more than 1,048,576 values"):
        check_metadata(wide, 1 << 20)
    shared = [1, 2]
    assert check_metadata({"x": shared, "y": (shared, shared)}, 100) == {
        "x": shared,
        "y": (shared, shared),
    }
