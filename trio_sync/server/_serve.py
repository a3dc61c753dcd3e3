"""``serve()``: the sync server on WebSockets, and ``serve_store()`` over any transport."""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from .._errors import TransportError
from .._groups import single_exception
from .._store_runner import StoreRunner, in_worker_thread, placement_for
from ..protocol import check_secret
from ..store import DEFAULT_STORE, ServerLog, StoreInfo, open_server_log
from ..store._pg_connect import is_postgres_url
from ..transport import (
    Connection,
    HttpRequest,
    HttpResponse,
    ListenerConfig,
    serve_websocket,
)
from ._blob_backends import BlobBackend, BlobLimits, FileBlobBackend
from ._blobs import handle as handle_connection
from ._follow import follow_database
from ._hub import Hub, HubConfig
from ._limits import ServerLimits
from ._metrics import CONTENT_TYPE

logger = logging.getLogger("trio_sync.server")

#: Accepts connections for a handler until cancelled: ``listen(handler, task_status=...)``
#: reports where it listens (a port, a URL) through task_status.
Listen = Callable[..., Awaitable[None]]


@attrs.frozen
class _Control:
    hub: Hub
    stop_accepting: trio.Event
    scope: trio.CancelScope
    #: Set once serve() has closed its database.
    stopped: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class Server:
    """A running server, as returned by ``nursery.start(trio_sync.serve, ...)``.

    Attributes:
        url: Where clients connect: ``ws://host:port`` (``wss://`` with TLS) serves the
            default store, ``<url>/<store_id>`` another store.
        host: The address it listens on.
        port: The port it listens on (the real one when 0 was asked for, or the one it
            fell back to).
        server_id: The default store's identity (new when the database is created).
        db_path: Its log: the SQLite file, or the PostgreSQL database (without password).
    """

    url: str
    host: str
    port: int
    server_id: str
    db_path: str
    _control: _Control = attrs.field(eq=False, repr=False, alias="control")

    async def shutdown(self, grace: float = 10.0) -> None:
        """Shuts down gracefully; returns once ``serve()`` has stopped and closed its
        database.

        Stops accepting connections, lets pushes in flight commit and be acknowledged,
        and closes every connection with code 1001 (going away): clients reconnect on
        their own when a server is back. Connections still open after ``grace`` seconds
        are cut.
        """
        control = self._control
        control.stop_accepting.set()
        await control.hub.drain(grace)
        control.scope.cancel()
        await control.stopped.wait()

    def reload_auth_secrets(self, secrets: Sequence[bytes]) -> None:
        """Verifies tokens with ``secrets`` from now on: the first one of a rotation is
        new, the others still verify tokens signed before.

        Raises:
            TokenError: A secret is too short.
            ValueError: The server was started without secrets (or ``secrets`` is empty):
                tokens are turned on or off by a restart.
        """
        self._control.hub.reload_auth_secrets(tuple(check_secret(s) for s in secrets))


async def serve_hub(
    hub: Hub,
    listen: Listen,
    *,
    blobs: BlobBackend | None = None,
    blob_limits: BlobLimits | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs the writer and serves every connection ``listen`` accepts, until cancelled.
    Reports what ``listen`` reported. Blob connections (files) reach ``blobs``."""

    async def handle(conn: Connection) -> None:
        await handle_connection(conn, hub, blobs, blob_limits or BlobLimits())

    with single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run_writer)
            await nursery.start(hub.run_health_checks)
            if hub.db.shared:  # other nodes append too: hear of it
                await nursery.start(follow_database, hub)
            task_status.started(await nursery.start(listen, handle))


async def serve_store(
    store: ServerLog,
    listen: Listen,
    *,
    schema_name: str = "default",
    schema_version: int = 1,
    limits: ServerLimits | None = None,
    create_stores: bool = False,
    auth_secrets: Sequence[bytes] = (),
    run_store: StoreRunner = in_worker_thread,
    blobs: BlobBackend | None = None,
    blob_limits: BlobLimits | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves ``store``'s logs (and ``blobs``' files) to every connection ``listen``
    accepts, until cancelled.

    The transport-neutral part of :func:`serve`: the simulator runs it over the in-memory
    transport with ``run_store=inline``. Reports what ``listen`` reported.
    """
    hub = Hub(
        store,
        run_store,
        _config(schema_name, schema_version, limits, create_stores, auth_secrets),
        placement=None if store.shared else placement_for(run_store),
    )
    await serve_hub(hub, listen, blobs=blobs, blob_limits=blob_limits, task_status=task_status)


def _blob_backend(db: str, blob_dir: str | None) -> BlobBackend | None:
    """Where files live: ``blob_dir``, or beside a SQLite log. Nodes on PostgreSQL share no
    folder unless told one (``blob_dir`` on shared storage): files are refused then."""
    if blob_dir is not None:
        return FileBlobBackend(blob_dir)
    if is_postgres_url(db):
        return None
    return FileBlobBackend(f"{db}.blobs")


def _config(
    schema_name: str,
    schema_version: int,
    limits: ServerLimits | None,
    create_stores: bool,
    auth_secrets: Sequence[bytes],
) -> HubConfig:
    return HubConfig(
        schema=(schema_name, schema_version),
        limits=limits or ServerLimits(),
        create_stores=create_stores,
        auth_secrets=tuple(check_secret(secret) for secret in auth_secrets),
    )


async def serve(
    db: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    port_fallback: int = 0,
    schema_name: str = "default",
    schema_version: int = 1,
    limits: ServerLimits | None = None,
    create_stores: bool = False,
    auth_secrets: Sequence[bytes] = (),
    ssl_context: ssl.SSLContext | None = None,
    run_store: StoreRunner = in_worker_thread,
    blob_dir: str | None = None,
    blob_limits: BlobLimits | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a sync server on the log ``db`` until cancelled (or ``Server.shutdown()``).

    Use with ``server = await nursery.start(trio_sync.serve, "server.sqlite3")``: start()
    returns once the server accepts connections. ``ws://host:port/<store_id>`` serves the
    store ``store_id``; the bare URL the default store. ``GET /healthz`` and
    ``GET /metrics`` (Prometheus) are served on the same port.

    Args:
        db: The server's log: a SQLite file (created if missing), or a PostgreSQL URL
            (``postgresql://user@host/dbname``, migrated with ``trio-sync migrate``; needs
            the ``postgres`` extra) that several server nodes may share.
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one (see ``Server.port``).
        port_fallback: When ``port`` is taken, how many next ports to try.
        schema_name: The application schema clients must speak.
        schema_version: Its version; clients with another one are told "incompatible".
        limits: What the server accepts (see :class:`ServerLimits`).
        create_stores: Create an unknown store when a client first connects to it (by
            default such a connection is refused).
        auth_secrets: Secrets that sign tokens (``trio-sync token``); when given, every
            client must present a valid token for its store and client id.
        ssl_context: Serve TLS (``wss://``) with this context.
        run_store: Where store calls run (a worker thread by default).
        blob_dir: Where file contents are kept, one directory per store (default:
            ``<db>.blobs`` beside a SQLite log; none for PostgreSQL, whose nodes need a
            folder they all share, so files are refused until one is given).
        blob_limits: Chunk size, largest file, each store's quota and when an abandoned
            upload expires (see :class:`BlobLimits`).

    Raises:
        StoreError: The database cannot be opened or written (in use, corrupt, newer
            schema, read-only, unreachable; StoreVersionError: a PostgreSQL database that
            was not migrated), or ``blob_dir`` (``<db>.blobs`` by default) cannot be a
            folder this process writes in (a file, a broken link, under a file).
        TransportError: No port could be bound.
        TokenError: A secret is too short.
    """
    config = _config(schema_name, schema_version, limits, create_stores, auth_secrets)
    store = await run_store(open_server_log, db)
    stopped = trio.Event()
    try:
        await run_store(store.check_writable)
        blobs = _blob_backend(db, blob_dir)  # at start, not at each upload
        stores = await run_store(store.stores)
        # A local log appends on the event loop while its disk is fast (an fsync then
        # costs less than the hop to a worker thread); a shared one always in the thread.
        placement = None if store.shared else placement_for(run_store)
        hub = Hub(store, run_store, config, placement=placement)
        stop_accepting = trio.Event()
        listener_config = ListenerConfig(
            handshake_timeout=config.limits.hello_timeout,
            max_connections=config.limits.max_connections,
            limits=config.limits.wire,
            ssl_context=ssl_context,
        )
        with trio.CancelScope() as scope, single_exception():
            async with trio.open_nursery() as nursery:
                bound: int = await nursery.start(
                    partial(
                        serve_hub,
                        blobs=blobs,
                        blob_limits=blob_limits,
                    ),
                    hub,
                    partial(
                        _listen_with_fallback,
                        host=host,
                        port=port,
                        port_fallback=port_fallback,
                        http_handler=partial(_http, hub),
                        config=listener_config,
                        stop_accepting=stop_accepting,
                    ),
                )
                url_host = f"[{host}]" if ":" in host else host
                scheme = "wss" if ssl_context is not None else "ws"
                server = Server(
                    url=f"{scheme}://{url_host}:{bound}",
                    host=host,
                    port=bound,
                    server_id=store.server_id,
                    db_path=store.path,
                    control=_Control(hub, stop_accepting, scope, stopped),
                )
                _log_start(server, stores, config, tls=ssl_context is not None)
                task_status.started(server)
    finally:
        with trio.CancelScope(shield=True):
            await run_store(store.close)
        stopped.set()


async def _listen_with_fallback(
    handler: Callable[[Connection], Awaitable[None]],
    *,
    host: str,
    port: int,
    port_fallback: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Listens on ``port``, or the next free one of ``port_fallback`` more after a short
    backoff, logging each conflict (Styxy's first recovery layer)."""
    delay = 0.05
    for attempt in range(min(port_fallback, 65535 - port) + 1 if port else 1):
        candidate = port + attempt if port else 0
        try:
            await serve_websocket(
                handler, host=host, port=candidate, task_status=task_status, **options
            )
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt >= min(port_fallback, 65535 - port):
                tried = f" or the {attempt} next port(s)" if attempt else ""
                # Other ports help with a taken port only (not a bad host, not a refusal).
                taken = exc.errno == errno.EADDRINUSE and not port_fallback
                hint = " (port_fallback=N tries the next N ports)" if taken else ""
                raise TransportError(
                    f"cannot listen on {host}:{port}{tried}: {exc.strerror or exc}{hint}"
                ) from None
            logger.warning("port %d is in use; trying %d in %.2fs", candidate, candidate + 1, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _http(hub: Hub, request: HttpRequest) -> HttpResponse:
    path = request.target.split("?", 1)[0]
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
    if path == "/healthz":
        if hub.draining:
            return HttpResponse(503, b"shutting down\n")
        problem = await hub.storage_problem()
        if problem:
            return HttpResponse(503, f"storage cannot be written: {problem}\n".encode())
        return HttpResponse(200, b"ok\n")
    if path == "/metrics":
        return HttpResponse(200, hub.metrics.render(), content_type=CONTENT_TYPE)
    return HttpResponse(404, b"not found: /healthz, /metrics, or a WebSocket to / or /<store>\n")


def _log_start(server: Server, stores: list[StoreInfo], config: HubConfig, *, tls: bool) -> None:
    limits = config.limits
    default = next(info for info in stores if info.store_id == DEFAULT_STORE)
    logger.info(
        "trio_sync server on %s: database %s, %d store(s) (default: head %d, identity %s)",
        server.url,
        server.db_path,
        len(stores),
        default.head,
        default.server_id,
    )
    logger.info(
        "tokens %s, TLS %s, unknown stores %s, schema %s v%d",
        f"required ({len(config.auth_secrets)} secret(s))" if config.auth_secrets else "off",
        "on" if tls else "off",
        "created on first use" if config.create_stores else "refused",
        *config.schema,
    )
    logger.info(
        "limits: frame %d B, event %d B, %d events/push, page %d B, tail %d B, "
        "%d connections (%d per store), %g msg/s, idle %gs",
        limits.wire.max_frame_bytes,
        limits.wire.max_event_bytes,
        limits.wire.max_push_events,
        limits.max_page_bytes,
        limits.max_tail_bytes,
        limits.max_connections,
        limits.max_connections_per_store,
        limits.messages_per_second,
        limits.idle_timeout,
    )
