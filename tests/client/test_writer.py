"""The client's writer: batches, and the store's write-ahead log kept bounded."""

from __future__ import annotations

from pathlib import Path

import trio_sync
from trio_sync.client._writer import CHECKPOINT_EVERY

#: Nothing listens here: the client stays offline, every commit is local.
OFFLINE_URL = "ws://127.0.0.1:1"


async def test_the_write_ahead_log_is_checkpointed_as_commits_go_on(tmp_path: Path) -> None:
    # What was tried: 4 x CHECKPOINT_EVERY commits, one at a time, on a store whose
    # automatic checkpoints are off (the writer runs them). Without them the log grew by
    # about 8 KiB per commit for ever (12 MB after 1,500 commits); with them it stops
    # growing once the first checkpoint lets SQLite reuse it from the start.
    path = str(tmp_path / "a.sqlite3")
    sizes = []
    async with trio_sync.open_client(OFFLINE_URL, path) as client:
        for round_ in range(4):
            for i in range(CHECKPOINT_EVERY):
                await client.commit("note.added", {"round": round_, "i": i})
            sizes.append(Path(path + "-wal").stat().st_size)  # noqa: ASYNC240
        assert client.status.pending == 4 * CHECKPOINT_EVERY
    assert sizes[3] <= sizes[1], sizes
    async with trio_sync.open_client(OFFLINE_URL, path) as client:
        assert client.status.pending == 4 * CHECKPOINT_EVERY
