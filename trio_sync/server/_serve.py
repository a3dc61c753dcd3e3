"""``serve()``: the sync server on trio-websocket."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio

from .._groups import single_exception
from .._store_runner import StoreRunner, in_worker_thread
from ..store import ServerStore
from ..transport import Connection, serve_websocket
from ._log import ServerLog
from ._session import ServerConfig, ServerSession

logger = logging.getLogger("trio_sync.server")


@attrs.frozen
class Server:
    """A running server, as returned by ``nursery.start(trio_sync.serve, ...)``.

    Attributes:
        url: Where clients connect (``ws://host:port``).
        host: The address it listens on.
        port: The port it listens on (the real one when 0 was asked for).
        server_id: This server database's identity (new when the database is created).
        db_path: The SQLite file of its log.
    """

    url: str
    host: str
    port: int
    server_id: str
    db_path: str


#: Accepts connections for a handler until cancelled: ``listen(handler, task_status=...)``
#: reports where it listens (a port, a URL) through task_status.
Listen = Callable[..., Awaitable[None]]


async def serve_store(
    store: ServerStore,
    listen: Listen,
    *,
    schema_name: str = "default",
    schema_version: int = 1,
    run_store: StoreRunner = in_worker_thread,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves ``store``'s log to every connection ``listen`` accepts, until cancelled.

    The transport-neutral part of :func:`serve`: the simulator runs it over the in-memory
    transport with ``run_store=inline``. Reports what ``listen`` reported.
    """
    config = ServerConfig(
        server_id=store.server_id, schema_name=schema_name, schema_version=schema_version
    )
    log = ServerLog(store, run_store)

    async def handle(conn: Connection) -> None:
        await ServerSession(conn, log, config).run()

    with single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run_writer)
            task_status.started(await nursery.start(listen, handle))


async def serve(
    db_path: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    schema_name: str = "default",
    schema_version: int = 1,
    run_store: StoreRunner = in_worker_thread,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a sync server on ``db_path`` until cancelled.

    Use with ``server = await nursery.start(trio_sync.serve, "server.sqlite3")``: start()
    returns once the server accepts connections.

    Args:
        db_path: The SQLite file of the server's log (created if missing).
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one (see ``Server.port``).
        schema_name: The application schema clients must speak.
        schema_version: Its version; clients with another one are told "incompatible".
        run_store: Where store calls run (a worker thread by default).

    Raises:
        StoreError: The database cannot be opened (in use, corrupt, newer schema).
        TransportError: The address cannot be bound.
    """
    store = await run_store(ServerStore.open, db_path)
    try:
        with single_exception():
            async with trio.open_nursery() as nursery:
                bound_port: int = await nursery.start(
                    partial(
                        serve_store,
                        store,
                        partial(serve_websocket, host=host, port=port),
                        schema_name=schema_name,
                        schema_version=schema_version,
                        run_store=run_store,
                    )
                )
                url_host = f"[{host}]" if ":" in host else host
                task_status.started(
                    Server(
                        url=f"ws://{url_host}:{bound_port}",
                        host=host,
                        port=bound_port,
                        server_id=store.server_id,
                        db_path=str(db_path),
                    )
                )
                logger.info("serving %s on ws://%s:%d", db_path, url_host, bound_port)
    finally:
        with trio.CancelScope(shield=True):
            await run_store(store.close)
