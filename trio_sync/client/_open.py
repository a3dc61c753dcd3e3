"""``open_client``: opens a client's store, starts its tasks, and closes both in order."""

from __future__ import annotations

import math
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio

from .._groups import single_exception
from .._store_runner import StoreRunner, despite_interrupts, in_worker_thread
from ..protocol import make_push_machine
from ..store import open_client_store
from ..transport import Connector, connect_websocket
from ._arguments import TokenSource, checked_token_source, server_urls
from ._client import Client
from ._config import ClientTimings
from ._core import ClientCore, TraceHook
from ._writer import ClientWriter

if TYPE_CHECKING:
    from ..files import FileOptions, FileSync

#: Seconds the closing handshake may take when an open_client block exits.
LEAVE_TIMEOUT = 1.0


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    store_path: str | os.PathLike[str],
    *,
    client_id: str | None = None,
    token: TokenSource | None = None,
    ssl_context: ssl.SSLContext | None = None,
    push_batch_size: int = 100,
    push_policy: str = "supervised",
    schema_name: str = "default",
    schema_version: int = 1,
    timings: ClientTimings | None = None,
    connector: Connector | None = None,
    run_store: StoreRunner = in_worker_thread,
    rng: random.Random | None = None,
    trace: TraceHook | None = None,
    wall_clock: Callable[[], float] | None = None,
    files: FileOptions | None = None,
) -> AsyncIterator[Client]:
    """Opens a sync client that runs in the background while the block runs.

    The client owns a nursery with the connection supervisor (reconnecting with jittered,
    capped exponential backoff) and, while connected, the pull loop, the push supervisor
    and the heartbeat. Leaving the block stops them and closes the store.

    Args:
        url: The server's URL (``ws://host:port[/store]``, ``wss://`` for TLS), or a list
            of URLs of server nodes sharing one log: the client moves to the next one each
            time a connection fails.
        store_path: The client's SQLite file (created if missing).
        client_id: This client's id; None uses the one in the store, or a new one.
        token: The token the server requires (``trio-sync token``), or a function
            returning the current one (called at each connection, so it may renew it; a
            failure, or no answer within ``timings.connect_timeout``, is a failed
            connection). A plain function runs on the event loop and must not block: one
            that fetches over the network should be ``async``.
        ssl_context: For ``wss://`` URLs: how to check the server's certificate.
        push_batch_size: The most events in one push.
        push_policy: "supervised" (the default, never parks) or "park" (LiveStore's
            legacy behaviour, for the stall reproduction only).
        schema_name: The application schema, checked against the server's.
        schema_version: Its version.
        timings: Timeouts, intervals and backoff (see :class:`ClientTimings`).
        connector: How to open a connection (WebSocket by default, with
            ``timings.connect_timeout``).
        run_store: Where store calls run (a worker thread by default).
        rng: Source of jitter (seed it for reproducible runs).
        trace: Called with every notable step (what, details); an exception it raises is
            logged and ignored.
        wall_clock: Wall-clock time for the status (``time.time`` by default; the
            simulator passes a virtual one).
        files: How ``client.files`` syncs files (see :class:`~trio_sync.files.FileOptions`).

    Raises:
        InvalidURL: A URL that can never work (a ``ValueError`` too); checked before
            anything is opened.
        ValueError: Unknown push_policy, a bad push_batch_size, an empty or too long
            token, or a client_id that is not a non-empty string of printable characters.
        TypeError: A token that is neither a string nor a function.
        StoreError: The store cannot be opened (in use, corrupt, another client's).
    """
    # Only the WebSocket connector understands URLs; a custom one (the simulator's) may
    # name its peers as it likes.
    urls = server_urls(url, check=connector is None)
    token = checked_token_source(token)
    store_path = os.fspath(store_path)
    timings = timings or ClientTimings()
    new_push = partial(make_push_machine, push_policy, push_batch_size, timings.push)
    push = new_push()
    store, recovered = await run_store(open_client_store, store_path, client_id)
    client: Client | None = None
    try:
        state = await run_store(store.load_state)
        core = ClientCore(store, state, push, run_store, rng or random.Random(), trace)
        if wall_clock is not None:
            core.wall_clock = wall_clock
        if recovered is not None:
            core.trace("recovery.damaged_store", salvaged=recovered.salvaged)
            core.notify(
                "recovery",
                what="damaged-store",
                moved_to=recovered.moved_to,
                salvaged=recovered.salvaged,
                reason=recovered.reason,
            )
        if connector is None:
            connector = partial(
                connect_websocket, connect_timeout=timings.connect_timeout, ssl_context=ssl_context
            )
        core.writer = ClientWriter(core)
        client = Client(core, urls, connector, timings, (schema_name, schema_version), token)
        client._new_push = new_push
        client.files = _file_sync(client, store_path, files)
        with single_exception():
            async with trio.open_nursery() as nursery:
                await nursery.start(core.writer.run)
                await nursery.start(client.files.run)
                nursery.start_soon(client._supervise)
                try:
                    yield client
                finally:
                    # Leaving in an orderly way, say goodbye; when cancelled, the
                    # connection's own tasks are cancelled too and could not answer.
                    if trio.current_effective_deadline() != -math.inf:
                        with trio.CancelScope(
                            deadline=trio.current_time() + LEAVE_TIMEOUT, shield=True
                        ):
                            await client._leave()
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if client is None:
                await despite_interrupts(partial(run_store, store.close))
            else:
                client._close()
                await client._core.writer.close_store()


def _file_sync(client: Client, store_path: str, options: FileOptions | None) -> FileSync:
    # Imported here: the files package builds on the client's core.
    from ..files import FileOptions, FileSync

    connector = client._connector
    return FileSync(
        client._core,
        store_path,
        options or FileOptions(),
        # The node the sync connection uses now (with several URLs, it moves on failure).
        connect=lambda: connector(client.current_url),
        token=client._current_token,
    )
