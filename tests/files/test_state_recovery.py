"""A damaged or missing transfer state (``<store>.files``): rebuilt, and nothing owed is
forgotten (``files/_state_recovery.py``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

import trio_sync
from trio_sync import StoreCorrupt
from trio_sync.files import TransferState
from trio_sync.files._model import FileInfo
from trio_sync.files._state_recovery import open_transfer_state, rows_for_held_contents

from ..conftest import WAIT, ClientFactory

#: Nothing listens here: the client stays offline.
OFFLINE_URL = "ws://127.0.0.1:1"


async def _saved_offline(path: Path, data: bytes) -> str:
    """Saves ``data`` on client A while it is offline: the upload is owed."""
    async with trio_sync.open_client(OFFLINE_URL, str(path), client_id="A") as a:
        fid = await a.files.save(data, path="owed.bin")
        assert a.files.state(fid).upload == TransferState("queued", _hash(data))
    return fid


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _damage(path: Path) -> None:
    """Writes garbage over the file's header: SQLite cannot read it."""
    with path.open("r+b") as file:
        file.write(bytes(range(256)) * 4)


@pytest.mark.parametrize("harm", ["damaged", "deleted"])
async def test_an_upload_owed_is_not_forgotten_when_the_transfer_state_is_lost(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path, harm: str
) -> None:
    # Tried (a review's finding): a file saved offline (its upload owed), then its
    # client's transfer state damaged on disk, or deleted by hand. Damaged, open_client
    # refused to start (StoreCorrupt); deleted, the client started with no record of the
    # upload, never made it, and every other client waited for the contents for ever.
    # Now the state is moved aside (damaged) or made anew, filled from the contents held
    # here, and the check of lost uploads when the files open uploads what the server
    # lacks.
    data = os.urandom(50_000)
    store = tmp_path / "A.sqlite3"
    state = tmp_path / "A.sqlite3.files"
    fid = await _saved_offline(store, data)
    if harm == "damaged":
        _damage(state)
    else:
        os.remove(state)
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "A") as a:
            await a.files.wait_for(
                lambda files: files.state(fid).upload == TransferState("done", _hash(data))
            )
            recoveries = [n for n in a.recent_events() if n.kind == "recovery"]
        async with open_test_client(server.url, "B") as b:
            await b.wait_synced()
            assert await b.files.read(fid) == data
    # The check when the files open found the server without the contents held here.
    assert [(n["what"], n["file_id"]) for n in recoveries[-1:]] == [("lost-on-server", fid)]
    if harm == "damaged":
        [moved] = [p for p in os.listdir(tmp_path) if ".files.corrupt." in p]
        assert [(n["what"], n["moved_to"], n["held"]) for n in recoveries[:-1]] == [
            ("damaged-transfer-state", str(tmp_path / moved), 1)
        ]
        with open(tmp_path / moved, "rb") as kept:  # noqa: ASYNC230
            assert kept.read(1024) == bytes(range(256)) * 4  # kept as it was
    else:
        assert len(recoveries) == 1


def test_a_file_that_is_not_a_transfer_state_is_refused_not_moved(tmp_path: Path) -> None:
    # Tried: the transfer state's path holds someone's file (whole pages of it).
    path = tmp_path / "c.sqlite3.files"
    path.write_bytes(b"notes" * 4096)
    for _attempt in range(2):
        with pytest.raises(StoreCorrupt):
            open_transfer_state(str(path))
    assert path.read_bytes() == b"notes" * 4096


def test_a_rebuilt_state_holds_the_contents_held_here_and_nothing_else() -> None:
    def info(file_id: str, content_hash: str, *, deleted: bool = False) -> FileInfo:
        return FileInfo(file_id, "p", content_hash, 1, deleted=deleted, author="A")

    files = {
        "f1": info("f1", "h1"),
        "f2": info("f2", "h2"),  # not held here: its download is queued by the reconcile
        "f3": info("f3", "h3", deleted=True),
    }
    held = {"h1", "h3"}
    assert rows_for_held_contents(files, held.__contains__) == [
        (("f1", "download"), TransferState("done", "h1"))
    ]
