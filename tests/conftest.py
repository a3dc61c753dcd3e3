"""Shared fixtures: a real server on loopback (port 0) and quick client timings."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_sync
from trio_sync import ClientTimings, HeartbeatTimings, PushTimings

from ._virtual import World

pytest_plugins = ["trio_sync.testing.pytest_plugin"]

#: Real-network tests wait on conditions, bounded by this many (real) seconds.
WAIT = 30

FAST = ClientTimings(
    connect_timeout=5.0,
    handshake_timeout=5.0,
    reconnect_base=0.01,
    reconnect_cap=0.2,
    heartbeat=HeartbeatTimings(interval=0.5, pong_timeout=5.0),
    push=PushTimings(ack_timeout=5.0, retry_base=0.01, retry_cap=0.2),
)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> trio_sync.Server:
    started: trio_sync.Server = await nursery.start(
        trio_sync.serve, str(tmp_path / "server.sqlite3")
    )
    return started


ServerFactory = Callable[..., Awaitable[trio_sync.Server]]


@pytest.fixture
def open_server(nursery: trio.Nursery, tmp_path: Path) -> ServerFactory:
    """``await open_server(**options)``: another server on tmp_path/server.sqlite3, with
    any options of ``trio_sync.serve``."""

    async def start(**options: Any) -> trio_sync.Server:
        server: trio_sync.Server = await nursery.start(
            partial(trio_sync.serve, str(tmp_path / "server.sqlite3"), **options)
        )
        return server

    return start


@pytest.fixture
async def world(nursery: trio.Nursery) -> World:
    """A virtual-time world (see tests/_virtual.py); use with the ``autojump_clock``."""
    return World(nursery)


ClientFactory = Callable[..., AbstractAsyncContextManager[trio_sync.Client]]


@pytest.fixture
def open_test_client(tmp_path: Path) -> ClientFactory:
    """``open_test_client(url, "A", **kwargs)``: a client with its store in tmp_path."""

    def factory(
        url: str, client_id: str, **kwargs: Any
    ) -> AbstractAsyncContextManager[trio_sync.Client]:
        kwargs.setdefault("timings", FAST)
        return trio_sync.open_client(
            url, str(tmp_path / f"{client_id}.sqlite3"), client_id=client_id, **kwargs
        )

    return factory


async def wait_converged(*clients: trio_sync.Client) -> None:
    """Waits (bounded) until every client is synced and all hold the same head."""
    with trio.fail_after(WAIT):
        while True:
            target = max(client.status.upstream_head for client in clients)
            for client in clients:
                await client.wait_status(
                    lambda s: s.state == "synced" and s.upstream_head >= target  # noqa: B023
                )
            statuses = [client.status for client in clients]
            if all(s.state == "synced" and s.upstream_head == target for s in statuses):
                return


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cycle collector stopped for the test (and everything collected before it), so
    that :func:`cyclic_garbage_of` sees what the test left in reference cycles."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_garbage_of(kind: type) -> int:
    """Runs a full collection and counts the objects of ``kind`` only it could free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(isinstance(thing, kind) for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


from .server._postgres import pg_cluster, pg_log, pg_url  # noqa: E402, F401 (fixtures)
