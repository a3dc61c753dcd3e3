"""``trio-sync demo``: an embedded server and two clients syncing on loopback.

What a newcomer should see in a few seconds: two clients committing at the same time,
each with a live status line (state, heads, pending), and a summary proving both ended
with the same log.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import trio

from .._errors import TrioSyncError
from ..client import Client, open_client
from ..protocol import Event, SyncStatus
from ..server import Server, serve

ITEMS = ["milk", "bread", "eggs", "coffee", "apples", "rice", "tea", "cheese", "soap", "salt"]


def log_digest(events: list[Event]) -> str:
    """A short fingerprint of a log: same events in the same order, same digest."""
    digest = hashlib.sha256()
    for event in events:
        row = [event.seq, event.client_id, event.client_seq, event.name, event.args]
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def status_line(name: str, status: SyncStatus, committed: int) -> str:
    server = "?" if status.server_head is None else str(status.server_head)
    return (
        f"  {name:<6} {status.state:<12} head {status.upstream_head:>4}/{server:<4} "
        f"pending {status.pending:>3}  committed {committed:>3}"
    )


class _Screen:
    """Live status lines: redrawn in place on a terminal; on a pipe or file, one line each
    time a client's state changes (and the final lines)."""

    def __init__(self, out: TextIO, names: list[str]) -> None:
        self._out = out
        self._names = names
        self._lines = {name: "" for name in names}
        self._states = {name: "" for name in names}
        self._live = out.isatty()
        self._drawn = False

    def update(self, name: str, status: SyncStatus, committed: int, *, final: bool = False) -> None:
        line = status_line(name, status, committed)
        if self._lines[name] == line:
            return
        if not self._live:
            if final or status.state != self._states[name]:
                self._states[name] = status.state
                self._lines[name] = line
                print(line, file=self._out, flush=True)
            return
        self._lines[name] = line
        if self._drawn:
            self._out.write(f"\x1b[{len(self._names)}F")
        for each in self._names:
            self._out.write("\x1b[2K" + self._lines[each] + "\n")
        self._out.flush()
        self._drawn = True


async def _commit_todos(client: Client, count: int, rng: random.Random, done: list[int]) -> None:
    for i in range(count):
        item = rng.choice(ITEMS)
        await client.commit("todo.created", {"id": f"{client.client_id}-{i}", "text": item})
        done[0] += 1
        if rng.random() < 0.3:
            await trio.sleep(rng.random() / 50)


async def run_demo(events: int = 50, seed: int = 1, out: TextIO = sys.stdout) -> bool:
    """Runs the demo; returns True when both clients ended with identical logs."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="trio-sync-demo-") as folder:
        path = Path(folder)
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, str(path / "server.sqlite3"))
            print(f"server: {server.url} (log in {path / 'server.sqlite3'})", file=out)
            print(f"two clients, {events} events each, committing concurrently:", file=out)
            names = ["alice", "bob"]
            screen = _Screen(out, names)
            async with (
                open_client(
                    server.url, str(path / "alice.sqlite3"), client_id="alice", push_batch_size=5
                ) as alice,
                open_client(
                    server.url, str(path / "bob.sqlite3"), client_id="bob", push_batch_size=3
                ) as bob,
            ):
                clients = {"alice": alice, "bob": bob}
                counts = {name: [0] for name in names}

                async def watch(name: str) -> None:
                    async for status in clients[name].status_changes():
                        screen.update(name, status, counts[name][0])

                async with trio.open_nursery() as watchers:
                    for name in names:
                        watchers.start_soon(watch, name)
                    async with trio.open_nursery() as writers:
                        for name in names:
                            writers.start_soon(
                                _commit_todos,
                                clients[name],
                                events,
                                random.Random(rng.random()),
                                counts[name],
                            )
                    with trio.fail_after(60):
                        while True:
                            await alice.wait_synced()
                            await bob.wait_synced()
                            if (
                                alice.status.upstream_head
                                == bob.status.upstream_head
                                == (2 * events)
                            ):
                                break
                            await trio.sleep(0.01)
                    for name in names:
                        screen.update(name, clients[name].status, counts[name][0], final=True)
                    watchers.cancel_scope.cancel()
                logs = {name: client.confirmed_events() for name, client in clients.items()}
            nursery.cancel_scope.cancel()

    identical = logs["alice"] == logs["bob"]
    order = " ".join(e.client_id[0].upper() for e in logs["alice"][:30])
    print("", file=out)
    print("summary:", file=out)
    for name, log in logs.items():
        mine = sum(1 for e in log if e.client_id == name)
        print(f"  {name:<6} {len(log)} events ({mine} own), log digest {log_digest(log)}", file=out)
    print(f"  server order of the first 30: {order}", file=out)
    verdict = "identical" if identical else "DIFFERENT"
    print(f"  both logs {verdict}: every event exactly once, in one global order", file=out)
    return identical


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="an embedded server and two clients syncing on loopback"
    )
    demo.add_argument("--events", type=int, default=50, help="events each client commits")
    demo.add_argument("--seed", type=int, default=1, help="seed for what the clients commit")

    demo.set_defaults(run=lambda args: main(args.events, args.seed))


def main(events: int, seed: int) -> int:
    try:
        return 0 if trio.run(run_demo, events, seed) else 1
    except TrioSyncError as exc:
        print(f"trio-sync demo: {exc}", file=sys.stderr)
        return 1
