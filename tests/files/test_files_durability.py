"""A client process killed with SIGKILL mid-upload finishes the transfer exactly once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

import trio_sync

from ..conftest import WAIT

SIZE = 40 * 1024 * 1024


async def _run_child(
    args: list[str], *, kill_once_held: Callable[[], int] | None = None
) -> tuple[list[str], int]:
    """Runs the child to its end; or, with ``kill_once_held``, lets it stall mid-upload,
    waits until the server holds every byte it sent (``kill_once_held()`` returns how
    many it holds) and kills it with SIGKILL."""
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
        stalled = [int(line.split()[1]) for line in lines if line.startswith("stalled")]
        if kill_once_held is not None and stalled:
            # The child sent everything before ``stalled`` and waits: the server's
            # partial reaches exactly that size (a condition, polled).
            while kill_once_held() < stalled[0]:  # noqa: ASYNC110 (another process)
                await trio.sleep(0.01)
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
    digest = hashlib.sha256(data).hexdigest()
    partial = Path(server.db_path + ".blobs/default/partial") / digest

    def held() -> int:
        return partial.stat().st_size if partial.exists() else 0

    with trio.fail_after(WAIT * 2):
        first, code = await _run_child([*args, str(SIZE // 2)], kill_once_held=held)
        assert code == -signal.SIGKILL
        assert "saved" in first and "idle" not in first
        killed_at = held()
        assert 0 < killed_at < SIZE
        second, code = await _run_child(args)
    assert code == 0 and "idle" in second and "saved" not in second
    # The upload resumed where the server's partial ended, not from zero.
    resumed = [int(line.split()[1]) for line in second if line.startswith("upload.progress")]
    assert resumed[0] == killed_at
    stored = Path(server.db_path + ".blobs/default/blobs") / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    async with trio_sync.open_client(server.url, str(tmp_path / "check.sqlite3")) as check:
        await check.wait_synced()
        created = [e for e in check.confirmed_events() if e.name == "file.created"]
        assert len(created) == 1
