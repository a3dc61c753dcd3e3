"""Holds on one step of a client's save, to place another client's change inside it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

import trio_sync
from trio_sync.files._reconcile import Reconciler

from ..conftest import WAIT


class CopyHold:
    """A blob store fault hook (``client.files.blobs.fault = hold``) that, once
    ``armed``, holds each copy of new contents (in its worker thread) until ``release``
    is set; ``copying`` is set when one is held. Wait for it from Trio with
    ``trio.to_thread.run_sync(hold.copying.wait, WAIT)``."""

    def __init__(self) -> None:
        self.copying = threading.Event()
        self.release = threading.Event()
        self.armed = False

    def __call__(self, what: str) -> None:
        if what == "put" and self.armed:
            self.copying.set()
            self.release.wait(WAIT)


def hold_commits_of_updates(
    client: trio_sync.Client, release: trio.Event | None = None
) -> trio.Event:
    """Holds the client's commits of file updates until ``release`` is set (None: for
    ever); the event returned is set when one is held."""
    writer = client.files._core.writer
    real_commit = writer.commit
    committing = trio.Event()

    async def held_commit(drafts: list[Any]) -> Any:
        if any(draft.name == "file.updated" for draft in drafts) and not (
            release is not None and release.is_set()
        ):
            committing.set()
            if release is None:
                await trio.sleep_forever()
            await release.wait()
        return await real_commit(drafts)

    writer.commit = held_commit  # type: ignore[method-assign]
    return committing


def hold_uploads(client: trio_sync.Client) -> trio.Event:
    """Holds every upload of the client at its start until the event returned is set."""
    executor = client.files.executor
    real_transfer = executor._transfer
    may_go = trio.Event()

    async def gated(direction: str, *args: Any) -> None:
        if direction == "upload":
            await may_go.wait()
        await real_transfer(direction, *args)  # type: ignore[arg-type]

    executor._transfer = gated  # type: ignore[method-assign]
    return may_go


class DecisionHold:
    """Once ``armed``, holds the next reconcile of the application's files right after
    its decision, at its ``want_downloads`` (patched on :class:`Reconciler` through
    ``monkeypatch``; a ``read()``'s own call is never held), until ``release`` is set;
    ``deciding`` is set when one is held. ``skip_empty``: hold only a call that wants
    some download."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, skip_empty: bool = False) -> None:
        self.deciding = trio.Event()
        self.release = trio.Event()
        self.armed = False
        real_want = Reconciler.want_downloads

        async def held_want(
            reconciler: Reconciler, wanted: Any, *, priority: bool = False, **more: Any
        ) -> None:
            if self.armed and not priority and (wanted or not skip_empty):
                self.armed = False
                self.deciding.set()
                await self.release.wait()
            await real_want(reconciler, wanted, priority=priority, **more)

        monkeypatch.setattr(Reconciler, "want_downloads", held_want)


class LateQueuedWrite:
    """Holds the client's first write of a download row "queued" made while ``watching``
    (as a worker thread that runs it late would) until ``until`` is set. ``decided`` is
    set when one is held, or when a reconcile of ``file_id`` returned without one;
    ``reconciled`` when a reconcile of ``file_id`` returned since."""

    def __init__(self, client: trio_sync.Client, file_id: str, until: trio.Event) -> None:
        self.decided = trio.Event()
        self.reconciled = trio.Event()
        self.watching = True
        self.held = False
        files = client.files
        states, reconciler, core = files._states, files._reconciler, files._core
        real_run, real_reconcile = core.run_store, reconciler.reconcile

        async def run_store(fn: Any, *args: Any) -> Any:
            if (
                self.watching
                and not self.held
                and fn == states.set_if_contents_unchanged
                and any(new is not None and new.status == "queued" for _, new, _ in args[0])
            ):
                self.held = True
                self.decided.set()
                await until.wait()
            return await real_run(fn, *args)

        async def reconcile(file_ids: set[str]) -> None:
            await real_reconcile(file_ids)
            if self.watching and file_id in file_ids:
                self.decided.set()
                self.reconciled.set()

        core.run_store = run_store
        reconciler.reconcile = reconcile  # type: ignore[method-assign]
