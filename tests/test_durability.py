"""Acknowledged means durable: a server killed with SIGKILL loses no acknowledged event,
and pushes arriving together are committed together."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

import trio_sync
from trio_sync._store_runner import inline
from trio_sync.protocol import PROTOCOL_VERSION, Event, Hello, Push, PushAck, Welcome
from trio_sync.server import serve_store
from trio_sync.store import MEMORY, ClientStore, PushRequest, ServerStore
from trio_sync.transport import MemoryNetwork

from .conftest import WAIT, ClientFactory, wait_converged
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


async def test_a_server_killed_again_and_again_under_load_loses_nothing_acknowledged(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    db = tmp_path / "server.sqlite3"
    rng = random.Random(7)
    proc, line = await start_serve("--db", str(db))
    url = line.split(" at ")[1].strip()
    port = url.rsplit(":", 1)[1]
    names = ["A", "B", "C"]
    committed = dict.fromkeys(names, 0)
    stop = trio.Event()

    async def keep_committing(client: trio_sync.Client) -> None:
        while not stop.is_set():
            await client.commit("e", {"i": committed[client.client_id]})
            committed[client.client_id] += 1

    try:
        async with (
            open_test_client(url, "A", push_batch_size=7) as a,
            open_test_client(url, "B", push_batch_size=1) as b,
            open_test_client(url, "C", push_batch_size=50) as c,
            trio.open_nursery() as writers,
        ):
            clients = [a, b, c]
            for client in clients:
                writers.start_soon(keep_committing, client)
            for _ in range(3):
                # A random moment under load: once the server has taken some more events.
                target = a.status.upstream_head + rng.randint(20, 300)
                with trio.fail_after(WAIT):
                    await a.wait_status(lambda s, t=target: s.upstream_head >= t)  # type: ignore[misc]
                proc.send_signal(signal.SIGKILL)
                with trio.fail_after(WAIT):
                    assert await proc.wait() == -signal.SIGKILL
                # What each client was told is durable: the server, dead, must hold it.
                acknowledged = {
                    each.client_id: committed[each.client_id] - each.status.pending
                    for each in clients
                }
                store = ServerStore.open(str(db))  # WAL recovery after the kill
                held = store.read(0, 10**9)
                store.close()
                for name, count in acknowledged.items():
                    assert sum(1 for e in held if e.client_id == name) >= count, name
                proc, _ = await start_serve("--db", str(db), "--port", port)
            stop.set()
            for client in clients:
                with trio.fail_after(WAIT):
                    await client.wait_synced()
            await wait_converged(*clients)
            logs = [client.confirmed_events() for client in clients]
    finally:
        proc.kill()
        await proc.wait()
    store = ServerStore.open(str(db))
    server_log = store.read(0, 10**9)
    store.close()
    assert logs[0] == logs[1] == logs[2] == server_log
    for name in names:
        mine = [e.args["i"] for e in server_log if e.client_id == name]
        assert mine == list(range(committed[name])), name  # every one, once, in order


COMMIT_MANY_SCRIPT = """
import sys, trio, trio_sync
async def main():
    # Offline (nothing listens there): commits are local, which is what is tested.
    async with trio_sync.open_client("ws://127.0.0.1:9", sys.argv[1], client_id="A") as c:
        batch = len(c.pending_events()) // 100
        while True:
            await c.commit_many([("n", {"batch": batch, "i": i}) for i in range(100)])
            print(batch, flush=True)   # only once commit_many returned
            batch += 1
trio.run(main)
"""


def test_a_commit_many_batch_is_all_or_nothing_across_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "client.sqlite3")
    rng = random.Random(3)
    returned = -1
    for _ in range(3):  # killed three times at random moments, restarted on the same store
        proc = subprocess.Popen(
            [sys.executable, "-c", COMMIT_MANY_SCRIPT, path], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        wait_for = returned + rng.randint(3, 30)
        for line in proc.stdout:
            returned = int(line)
            if returned >= wait_for:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
        rest = proc.stdout.read().split()
        proc.stdout.close()
        returned = int(rest[-1]) if rest else returned

        store = ClientStore.open(path, "A")
        pending = store.load_state().pending
        store.close()
        batches = [e.args["batch"] for e in pending]
        # Whole batches only, in order, each of its 100 events; none that returned is lost.
        assert batches == [b for b in range(len(pending) // 100) for _ in range(100)]
        assert [e.args["i"] for e in pending] == list(range(100)) * (len(pending) // 100)
        assert len(pending) // 100 >= returned + 1


async def test_pushes_arriving_together_share_one_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = ServerStore.open(MEMORY)
    transactions: list[int] = []
    apply = store.apply_pushes

    def counting(pushes: list[PushRequest]) -> object:
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
