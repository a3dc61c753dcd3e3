"""reset() killed with SIGKILL between its steps: no pending event is lost or doubled."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import trio

import trio_sync
from trio_sync import IncompatibleServer

from ..conftest import FAST, WAIT

#: Opens the store on a rebuilt server, waits for "incompatible", then resets with a
#: SIGKILL injected at one step: before the lineage is replaced (after the JSON-lines
#: backup) or after it (before the client reconnects).
RESET_AND_DIE = """
import os, signal, sys
import trio, trio_sync
from trio_sync.store import _lineage
from trio_sync.client import _core

url, store, step = sys.argv[1], sys.argv[2], sys.argv[3]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if step == "after-backup":
    _lineage.replace_lineage = die
else:
    original = _core.ClientCore.start_lineage
    def start_then_die(self, *args):
        original(self, *args)
        die()
    _core.ClientCore.start_lineage = start_then_die

async def main():
    async with trio_sync.open_client(url, store) as client:
        with trio.fail_after(30):
            await client.wait_status(lambda s: s.state == "incompatible")
        await client.reset(keep_pending=True)

trio.run(main)
"""


@pytest.mark.parametrize("step", ["after-backup", "after-new-lineage"])
async def test_reset_killed_between_steps_loses_nothing(
    nursery: trio.Nursery, tmp_path: Path, step: str
) -> None:
    store = str(tmp_path / "c.sqlite3")
    first: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "one.sqlite3"))
    async with trio_sync.open_client(first.url, store, timings=FAST) as client:
        await client.commit("synced", {"n": 0})
        with trio.fail_after(WAIT):
            await client.wait_synced()
    await first.shutdown()
    rebuilt: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "two.sqlite3"))
    async with trio_sync.open_client(rebuilt.url, store, timings=FAST) as client:
        for n in range(1, 4):
            await client.commit("pending", {"n": n})
        with trio.fail_after(WAIT), pytest.raises(IncompatibleServer):
            await client.wait_synced()

    result = await trio.run_process(
        [sys.executable, "-c", RESET_AND_DIE, rebuilt.url, store, step], check=False
    )
    assert result.returncode == -signal.SIGKILL

    backups = await trio.to_thread.run_sync(lambda: sorted(tmp_path.glob("c.sqlite3.pending-*")))
    assert len(backups) == 1  # written before anything changed, in both cases
    async with trio_sync.open_client(rebuilt.url, store, timings=FAST) as client:
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: s.state in ("synced", "incompatible"))
            if status.state == "incompatible":  # killed before the new lineage: do it again
                assert step == "after-backup"
                await client.reset(keep_pending=True)
            await client.wait_synced()
        log = [(e.name, e.args["n"]) for e in client.confirmed_events()]
    assert log == [("pending", 1), ("pending", 2), ("pending", 3)]
