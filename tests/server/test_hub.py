"""The hub's appends: one at a time, whoever does them (its writer task or a session)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from trio_sync._store_runner import Placement, in_worker_thread
from trio_sync.protocol import Accept, Event, Push
from trio_sync.server._hub import Hub, HubConfig, InternalError
from trio_sync.store import PushRequest, ServerStore


class _LeadsThenThreads:
    """Says a push may be appended by its own session (inline), then sends the append
    to the thread: as when the disk turned slow in between."""

    inline = True

    def choose(self, *, disk_busy: bool = False) -> Placement:
        return "thread"

    def ran(self, placement: Placement, seconds: float) -> None:
        pass


async def push_at_once(hub: Hub, push: Callable[[int], Awaitable[None]], clients: int) -> None:
    """Runs ``push(client)`` for each client at once, with the hub's writer task running."""
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_writer)
        async with trio.open_nursery() as pushers:
            for client in range(clients):
                pushers.start_soon(push, client)
        nursery.cancel_scope.cancel()


async def test_a_session_appending_and_the_writer_task_never_overlap(tmp_path: Path) -> None:
    # What was tried: 30 clients push at once; the session that leads its own push waits
    # for a slow append in the thread, so the pushes arriving meanwhile queue for the
    # writer task. The writer task must wait for the session's append (two appends at
    # once would decide positions from a head the other is about to move).
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    active, overlaps = [0], [0]
    guard = threading.Lock()
    apply = store.apply_pushes

    def slow_apply(requests: list[PushRequest]) -> object:
        with guard:
            active[0] += 1
            overlaps[0] += active[0] > 1
        try:
            time.sleep(0.005)
            return apply(requests)
        finally:
            with guard:
                active[0] -= 1

    store.apply_pushes = slow_apply  # type: ignore[method-assign]
    hub = Hub(store, in_worker_thread, HubConfig(), placement=_LeadsThenThreads())  # type: ignore[arg-type]
    try:
        log = await hub.open_store("default")
        assert log is not None
        decisions = []

        async def push(client: int) -> None:
            await trio.sleep(0.001 * (client % 3))
            event = Event("x", {}, f"c{client}", 1)
            decisions.append(await hub.push(log, f"c{client}", Push(1, log.head, (event,))))

        await push_at_once(hub, push, 30)
        assert overlaps[0] == 0
        accepted = [d for d in decisions if isinstance(d, Accept)]
        seqs = sorted(event.seq for d in accepted for event in d.new)
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == log.head
    finally:
        store.close()


async def test_pushes_failed_together_each_raise_an_error_of_their_own(tmp_path: Path) -> None:
    # What was tried: 6 pushes share one failed append (an unexpected error in the store).
    # Each session raises, logs and lets go of its error; one shared object carried every
    # session's frames in its traceback, and the first to let go cut the others' logs.
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))

    def broken_apply(requests: list[PushRequest]) -> object:
        raise RuntimeError("injected bug")

    store.apply_pushes = broken_apply  # type: ignore[method-assign]
    hub = Hub(store, in_worker_thread, HubConfig())
    try:
        log = await hub.open_store("default")
        assert log is not None
        errors: list[BaseException] = []

        async def push(client: int) -> None:
            event = Event("x", {}, f"c{client}", 1)
            try:
                await hub.push(log, f"c{client}", Push(1, 0, (event,)))
            except InternalError as exc:
                errors.append(exc)

        await push_at_once(hub, push, 6)
        assert len(errors) == 6
        assert len({id(error) for error in errors}) == 6
        assert {str(error) for error in errors} == {"internal server error while writing"}
    finally:
        store.close()
