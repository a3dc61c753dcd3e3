"""Acknowledged means durable: a server killed with SIGKILL loses no acknowledged event,
and pushes arriving together are committed together."""

from __future__ import annotations

import signal
import subprocess
from functools import partial
from pathlib import Path

import trio

import trio_sync
from trio_sync._store_runner import inline
from trio_sync.protocol import PROTOCOL_VERSION, Event, Hello, Push, PushAck, Welcome
from trio_sync.server import serve_store
from trio_sync.store import MEMORY, ServerStore
from trio_sync.transport import MemoryNetwork

from .conftest import WAIT, ClientFactory
from .test_cli import CLI, start_serve


async def test_server_killed_with_sigkill_keeps_every_acknowledged_event(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    db = tmp_path / "server.sqlite3"
    proc, line = await start_serve("--db", str(db))
    url = line.split(" at ")[1].strip()
    committed = 0
    try:
        async with open_test_client(url, "A", push_batch_size=7) as client:
            with trio.fail_after(WAIT):
                while client.status.upstream_head < 100:  # the server is acknowledging
                    await client.commit("e", {"i": committed})
                    committed += 1
            proc.send_signal(signal.SIGKILL)
            # Everything not pending any more was acknowledged before the kill.
            acknowledged = committed - client.status.pending
            with trio.fail_after(WAIT):
                assert await proc.wait() == -signal.SIGKILL
    finally:
        proc.kill()
    assert acknowledged >= 100

    store = ServerStore.open(str(db))  # opens fine after a kill (WAL recovery)
    held = store.read(0, 10**6)
    store.close()
    assert len(held) >= acknowledged, (len(held), acknowledged, committed)
    assert [e.args["i"] for e in held] == list(range(len(held)))  # in commit order, no gaps


async def test_pushes_arriving_together_share_one_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = ServerStore.open(MEMORY)
    transactions: list[int] = []
    apply = store.apply_pushes

    def counting(pushes: list[tuple[str, Push]]) -> object:
        transactions.append(len(pushes))
        return apply(pushes)

    store.apply_pushes = counting  # type: ignore[method-assign]
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(serve_store, store, partial(network.serve, name="s"), run_store=inline)
        )

        async def push_once(client_id: str) -> None:
            async with network.connect(url) as conn:
                await conn.send(Hello(PROTOCOL_VERSION, client_id, "default", 1, None, 0))
                assert isinstance(await conn.receive(), Welcome)
                await conn.send(Push(1, 0, (Event("x", {}, client_id, 1),)))
                assert isinstance(await conn.receive(), PushAck | trio_sync.protocol.ServerAhead)

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(push_once, f"c{i}")
        nursery.cancel_scope.cancel()
    assert sum(transactions) == 20
    assert len(transactions) < 20, transactions  # some pushes were grouped
    store.close()


def test_cli_is_importable_without_side_effects() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serve" in result.stdout and "demo" in result.stdout
