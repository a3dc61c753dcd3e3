"""``trio-sync serve``: a sync server until SIGINT or SIGTERM (gracefully; a second
signal at once); SIGHUP rereads the secret file."""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import trio

from .._errors import TransportError, TrioSyncError
from .._groups import single_exception
from ..protocol import EVENT_ENVELOPE_BYTES, MESSAGE_ENVELOPE_BYTES, WireLimits
from ..server import BlobLimits, Server, ServerLimits, serve, tune_process
from ._args import (
    CommandError,
    byte_size,
    count,
    db_path,
    folder,
    port,
    read_secrets,
    seconds,
    version,
)


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "serve",
        help="run a sync server",
        description="Serves the default store at ws://HOST:PORT and store S at "
        "ws://HOST:PORT/S; GET /healthz and /metrics on the same port. SIGINT or SIGTERM "
        "shut it down gracefully (a second one at once).",
    )
    run.add_argument(
        "--db",
        required=True,
        type=db_path,
        help="the server's log: a SQLite file (created if missing), or a postgresql:// URL "
        "(migrated with `trio-sync migrate`) that several nodes share",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--port", type=port, default=0, help="port (0: any free port)")
    run.add_argument(
        "--port-fallback",
        type=count,
        default=0,
        metavar="N",
        help="when the port is taken, try the next N ports",
    )
    run.add_argument(
        "--create-stores",
        action="store_true",
        help="create a store when a client first connects to it (default: refuse)",
    )
    run.add_argument(
        "--auth-secret-file",
        metavar="FILE",
        help="require tokens signed with the secret(s) in FILE (one per line; the first "
        "signs, all verify)",
    )
    run.add_argument("--certfile", help="serve TLS (wss://) with this certificate (PEM)")
    run.add_argument("--keyfile", help="the certificate's private key (PEM)")
    run.add_argument(
        "--blob-dir",
        type=folder,
        help="where file contents are kept (default: <db>.blobs beside a SQLite log; "
        "nodes on PostgreSQL need a folder they all share)",
    )
    run.add_argument("--schema-name", default="default", help="application schema name")
    run.add_argument("--schema-version", type=version, default=1, help="application schema version")
    limits = run.add_argument_group("limits (0 or absent: the default)")
    for flag, kind, text in (
        ("--max-frame-bytes", count, "largest frame"),
        ("--max-event-bytes", count, "largest event (name + args as JSON)"),
        ("--max-push-events", count, "most events in one push"),
        ("--max-connections", count, "open connections in total"),
        ("--max-connections-per-store", count, "connections to one store"),
        ("--max-stores", count, "stores in all (with --create-stores)"),
        ("--idle-timeout", seconds, "seconds a connection may stay silent"),
        ("--messages-per-second", seconds, "messages read per connection per second"),
        (
            "--max-store-bytes",
            byte_size,
            "the quota of each store's files: bytes held, uploads in progress included "
            "(10G by default; K, M, G, T are powers of 1024)",
        ),
        (
            "--partial-max-age",
            seconds,
            "seconds after which an upload nothing wrote to is abandoned and its bytes "
            "deleted (86400 by default)",
        ),
    ):
        limits.add_argument(flag, type=kind, default=0, help=text)
    limits.add_argument(
        "--unreferenced-min-age",
        type=seconds,
        default=None,
        help="seconds a stored file's contents no file refers to any more are kept before "
        "an upload that needs their room deletes them (3600 by default; 0 here keeps them "
        "for no time: see docs/files.md before you do)",
    )
    limits.add_argument(
        "--measure-max-age",
        type=seconds,
        default=None,
        help="seconds a store's measured size (its last listing plus what this node "
        "stored since) lets uploads in before the store is listed again; nodes sharing a "
        "blob folder see each other's files within it (5 by default; 0 here lists the "
        "store on every upload begin)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long a graceful shutdown waits for connections to close",
    )
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="what the server logs to stderr",
    )

    run.set_defaults(run=run_serve)


def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server's TLS context (None without ``--certfile``), or a one-line error that
    names the file at fault.

    Raises:
        CommandError: A file cannot be read, holds no certificate or no private key, or
            the key is not the certificate's.
    """
    if keyfile and not certfile:
        raise CommandError("--keyfile needs --certfile")
    if not certfile:
        return None
    texts: dict[str, str] = {}
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                texts[flag] = file.read().decode("ascii", "replace")
        except OSError as exc:
            raise CommandError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        # OpenSSL says only "PEM lib" for a file without what it looked for: say which.
        if "-----BEGIN CERTIFICATE-----" not in texts["--certfile"]:
            raise CommandError(f"--certfile {certfile!r} holds no PEM certificate") from None
        if keyfile is None and "PRIVATE KEY-----" not in texts["--certfile"]:
            raise CommandError(
                f"cannot load the private key: --certfile {certfile!r} holds none; name the "
                "key's file with --keyfile"
            ) from None
        if keyfile is not None and "PRIVATE KEY-----" not in texts["--keyfile"]:
            raise CommandError(f"--keyfile {keyfile!r} holds no PEM private key") from None
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise CommandError(
                f"the private key in {keyfile or certfile!r} is not the certificate's"
            ) from None
        raise CommandError(f"cannot load the certificate or its key: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot load the certificate or its key: {exc}") from None
    return context


def _listen_error(exc: TransportError) -> TrioSyncError:
    """The server's "cannot listen" error in the command line's words: its hint for a
    taken port names the Python argument (``port_fallback=N``); here it names the flag."""
    message = str(exc)
    if not message.endswith(_PYTHON_PORT_HINT):
        return exc
    return CommandError(message.removesuffix(_PYTHON_PORT_HINT) + _FLAG_PORT_HINT)


#: What the server appends to the error for a taken port, and what the CLI says instead.
_PYTHON_PORT_HINT = " (port_fallback=N tries the next N ports)"
_FLAG_PORT_HINT = " (--port-fallback N tries the next N ports)"


def run_serve(args: argparse.Namespace) -> int:
    tune_process()
    raise_file_limit((args.max_connections or ServerLimits().max_connections) + 64)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # While the database is down, the pool warns of every reconnection attempt (one
        # every second or two, for as long as it lasts); the server says it once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    try:
        trio.run(_serve_until_signalled, args)
    except TransportError as exc:
        raise _listen_error(exc) from None
    return 0


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    ssl_context = tls_context(args.certfile, args.keyfile)
    secrets = read_secrets(args.auth_secret_file) if args.auth_secret_file else ()
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        trio.open_signal_receiver(signal.SIGHUP) as hangups,
        single_exception(),
    ):
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(
                    serve,
                    args.db,
                    args.host,
                    args.port,
                    port_fallback=args.port_fallback,
                    schema_name=args.schema_name,
                    schema_version=args.schema_version,
                    limits=_limits(args),
                    create_stores=args.create_stores,
                    auth_secrets=secrets,
                    ssl_context=ssl_context,
                    blob_dir=args.blob_dir,
                    blob_limits=blob_limits(args),
                )
            )
            print(f"trio-sync serving {server.db_path} at {server.url}", flush=True)
            if args.auth_secret_file:
                nursery.start_soon(
                    _reload_secrets_on_hangup, hangups, server, args.auth_secret_file
                )
            async for signum in signals:
                print(f"trio-sync: {signal.Signals(signum).name}, shutting down", flush=True)
                # Graceful: in-flight pushes are committed and answered, clients are told
                # 1001 (going away). A second signal cuts it short.
                async with trio.open_nursery() as graceful:
                    graceful.start_soon(_cancel_on_next_signal, signals, graceful.cancel_scope)
                    await server.shutdown(args.shutdown_grace)
                    graceful.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
                break


async def _reload_secrets_on_hangup(hangups: AsyncIterator[int], server: Server, path: str) -> None:
    """SIGHUP rereads the secret file (a rotation); a file that cannot be used now is
    reported, and the secrets in use stay."""
    async for _ in hangups:
        try:
            server.reload_auth_secrets(read_secrets(path))
        except (TrioSyncError, ValueError) as exc:
            logging.getLogger("trio_sync.server").error(
                "SIGHUP: the secrets stay as they were: %s", exc
            )


async def _cancel_on_next_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def _limits(args: argparse.Namespace) -> ServerLimits:
    defaults = ServerLimits()
    try:
        wire = WireLimits(
            max_frame_bytes=args.max_frame_bytes or defaults.wire.max_frame_bytes,
            max_event_bytes=args.max_event_bytes or defaults.wire.max_event_bytes,
            max_push_events=args.max_push_events or defaults.wire.max_push_events,
        )
        # A page holds at least one maximal event and at most a frame.
        one_event = wire.max_event_bytes + EVENT_ENVELOPE_BYTES + MESSAGE_ENVELOPE_BYTES
        page = max(one_event, min(defaults.max_page_bytes, wire.max_frame_bytes))
        return ServerLimits(
            wire=wire,
            max_page_bytes=page,
            max_connections=args.max_connections or defaults.max_connections,
            max_connections_per_store=(
                args.max_connections_per_store or defaults.max_connections_per_store
            ),
            max_stores=args.max_stores or defaults.max_stores,
            idle_timeout=args.idle_timeout or defaults.idle_timeout,
            messages_per_second=args.messages_per_second or defaults.messages_per_second,
        )
    except ValueError as exc:
        raise CommandError(f"limits: {exc}") from None


def blob_limits(args: argparse.Namespace) -> BlobLimits:
    """The limits of file transfers the command line asks for (0: the default)."""
    defaults = BlobLimits()
    try:
        return BlobLimits(
            max_store_bytes=args.max_store_bytes or defaults.max_store_bytes,
            partial_max_age=args.partial_max_age or defaults.partial_max_age,
            unreferenced_min_age=(
                defaults.unreferenced_min_age
                if args.unreferenced_min_age is None
                else args.unreferenced_min_age
            ),
            measure_max_age=(
                defaults.measure_max_age if args.measure_max_age is None else args.measure_max_age
            ),
        )
    except ValueError as exc:
        raise CommandError(f"limits: {exc}") from None


def raise_file_limit(needed: int) -> None:
    """Raises the open-file limit to its hard maximum (each connection is a file); warns
    when even that is below what the connection limit needs."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        return
    if soft != resource.RLIM_INFINITY and soft < needed:
        print(
            f"trio-sync: warning: this process may open {soft} files, fewer than the "
            f"{needed} that --max-connections needs: lower it or raise the limit (ulimit -n)",
            file=sys.stderr,
        )
