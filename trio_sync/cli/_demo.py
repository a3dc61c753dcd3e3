"""``trio-sync demo``: an embedded server and two clients syncing on loopback.

What a newcomer should see in a few seconds: two clients committing at the same time,
each with a live status line (state, heads, pending), and a summary proving both ended
with the same log.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import trio
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._errors import TrioSyncError
from ..client import Client, open_client
from ..protocol import Event, SyncStatus
from ..server import Server, serve
from . import _args

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
    """Live status: a table redrawn in place on a terminal (rich); on a pipe or file, one
    line each time a client's state changes (and the final lines)."""

    def __init__(self, out: TextIO, names: list[str]) -> None:
        self._out = out
        self._names = names
        self._lines = {name: "" for name in names}
        self._states = {name: "" for name in names}
        self._rows: dict[str, tuple[SyncStatus, int]] = {}
        self.console = Console(file=out)
        self._live: Live | None = None
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, auto_refresh=False)

    def __enter__(self) -> _Screen:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

    def _table(self) -> Table:
        table = Table("client", "state", "head", "pending", "committed")
        for name in self._names:
            if name in self._rows:
                status, committed = self._rows[name]
                server = "?" if status.server_head is None else str(status.server_head)
                table.add_row(
                    name,
                    status.state,
                    f"{status.upstream_head}/{server}",
                    str(status.pending),
                    str(committed),
                )
        return table

    def update(self, name: str, status: SyncStatus, committed: int, *, final: bool = False) -> None:
        line = status_line(name, status, committed)
        if self._lines[name] == line:
            return
        if self._live is not None:
            self._lines[name] = line
            self._rows[name] = (status, committed)
            self._live.update(self._table(), refresh=True)
        elif final or status.state != self._states[name]:
            self._lines[name] = line  # what was printed last
            self._states[name] = status.state
            print(line, file=self._out, flush=True)


async def _catch_up(client: Client, total: int, console: Console, out: TextIO) -> float:
    """Waits until ``client`` holds ``total`` events, showing its catch-up progress (a bar
    on a terminal); returns the seconds it took."""
    started = trio.current_time()
    if console.is_terminal:
        columns = (
            TextColumn("  carol catching up"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("catch-up", total=total)
            async for status in client.status_changes():
                bar.update(task, completed=status.upstream_head)
                if status.upstream_head >= total:
                    break
    else:
        async for status in client.status_changes():
            if status.progress is not None:
                done, of = status.progress.done, status.progress.total
                print(f"  carol catching up: {done}/{of} events", file=out, flush=True)
            if status.upstream_head >= total:
                break
    return trio.current_time() - started


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
            with screen:
                logs = await _two_clients(server, path, events, rng, names, screen)
            total = 2 * events
            print(f"carol joins late and pulls the {total} events:", file=out)
            async with open_client(
                server.url, str(path / "carol.sqlite3"), client_id="carol"
            ) as carol:
                with trio.fail_after(60):
                    seconds = await _catch_up(carol, total, screen.console, out)
                    await carol.wait_synced()
                print(f"  carol caught up with {total} events in {seconds:.2f}s", file=out)
                logs["carol"] = carol.confirmed_events()
            nursery.cancel_scope.cancel()
    return _summary(logs, out)


async def _two_clients(
    server: Server,
    path: Path,
    events: int,
    rng: random.Random,
    names: list[str],
    screen: _Screen,
) -> dict[str, list[Event]]:
    """Alice and bob commit concurrently until both hold every event; their logs."""
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
                    if alice.status.upstream_head == bob.status.upstream_head == 2 * events:
                        break
                    await trio.sleep(0.01)
            for name in names:
                screen.update(name, clients[name].status, counts[name][0], final=True)
            watchers.cancel_scope.cancel()
        return {name: client.confirmed_events() for name, client in clients.items()}


def _summary(logs: dict[str, list[Event]], out: TextIO) -> bool:
    first = logs["alice"]
    identical = all(log == first for log in logs.values())
    order = " ".join(e.client_id[0].upper() for e in first[:30])
    print("", file=out)
    print("summary:", file=out)
    for name, log in logs.items():
        mine = sum(1 for e in log if e.client_id == name)
        print(f"  {name:<6} {len(log)} events ({mine} own), log digest {log_digest(log)}", file=out)
    print(f"  server order of the first 30: {order}", file=out)
    verdict = "identical" if identical else "DIFFERENT"
    print(f"  all logs {verdict}: every event exactly once, in one global order", file=out)
    return identical


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="an embedded server and two clients syncing on loopback"
    )
    demo.add_argument(
        "--events",
        type=_args.bounded(1_000_000),
        default=50,
        help="events each client commits (1 to 1,000,000)",
    )
    demo.add_argument("--seed", type=_args.seed, default=1, help="seed for what the clients commit")

    demo.set_defaults(run=lambda args: main(args.events, args.seed))


async def _run_until_interrupted(events: int, seed: int) -> bool:
    """Runs the demo; Ctrl-C (SIGINT) cancels it, and KeyboardInterrupt is raised once it
    has stopped.

    Left to Trio, Ctrl-C raises KeyboardInterrupt wherever the signal finds code that is
    not protected from it: any task's, and Trio's own bookkeeping that task called. Inside
    a nursery's start_soon it left a task registered but never scheduled: its nursery
    waited for ever, holding the interrupt, and the demo went on syncing. Between a
    durable write run on the event loop and what it updates in memory, it left the two
    apart. A cancellation stops every task at a checkpoint instead (as ``serve`` does).
    """
    with trio.open_signal_receiver(signal.SIGINT) as signals, trio.CancelScope() as demo:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, demo)
            identical = await run_demo(events, seed)
            nursery.cancel_scope.cancel()
    if demo.cancel_called:
        raise KeyboardInterrupt
    return identical


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def main(events: int, seed: int) -> int:
    try:
        return 0 if trio.run(_run_until_interrupted, events, seed) else 1
    except TrioSyncError as exc:
        print(f"trio-sync demo: {exc}", file=sys.stderr)
        return 1
