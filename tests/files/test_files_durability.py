"""A client process killed with SIGKILL mid-upload finishes the transfer exactly once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

import trio_sync

from ..conftest import WAIT

SIZE = 40 * 1024 * 1024


async def _run_child(args: list[str], *, kill_after_progress: bool) -> tuple[list[str], int]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.files._upload_child", *args],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None
    lines: list[str] = []
    buffer = b""
    while True:
        chunk = await proc.stdout.receive_some(4096)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete]
        moved = [int(line.split()[1]) for line in lines if line.startswith("upload.progress")]
        if kill_after_progress and any(0 < m < SIZE for m in moved):
            proc.send_signal(signal.SIGKILL)
            break
    return lines, await proc.wait()


async def test_sigkill_mid_upload_then_restart_finishes_exactly_once(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    data = os.urandom(SIZE)
    source.write_bytes(data)
    args = [server.url, str(tmp_path / "k.sqlite3"), str(source)]
    with trio.fail_after(WAIT * 2):
        first, code = await _run_child(args, kill_after_progress=True)
        assert code == -signal.SIGKILL
        assert "saved" in first and "idle" not in first
        second, code = await _run_child(args, kill_after_progress=False)
    assert code == 0 and "idle" in second and "saved" not in second
    # The upload resumed where the server's partial ended, not from zero.
    resumed = [int(line.split()[1]) for line in second if line.startswith("upload.progress")]
    assert resumed[0] > 0
    digest = hashlib.sha256(data).hexdigest()
    stored = Path(server.db_path + ".blobs/default/blobs") / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    async with trio_sync.open_client(server.url, str(tmp_path / "check.sqlite3")) as check:
        await check.wait_synced()
        created = [e for e in check.confirmed_events() if e.name == "file.created"]
        assert len(created) == 1
