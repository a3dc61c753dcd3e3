"""The ``trio-sync`` command."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import resource
import signal
import ssl
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial

import trio

from ._errors import TrioSyncError
from ._groups import single_exception
from .protocol import (
    EVENT_ENVELOPE_BYTES,
    INT64_MAX,
    MAX_CLIENT_ID_LENGTH,
    MESSAGE_ENVELOPE_BYTES,
    TokenError,
    WireLimits,
    check_identifier,
    check_secret,
    issue_token,
)
from .server import Server, ServerLimits, serve
from .store import valid_store_id


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    ssl_context = None
    if args.certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(f"cannot load the certificate or key: {exc}") from None
    if args.keyfile and not args.certfile:
        raise CommandError("--keyfile needs --certfile")
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
                )
            )
            print(f"trio-sync serving {args.db} at {server.url}", flush=True)
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


class CommandError(TrioSyncError):
    """A command's input cannot be used (the message says why)."""


def tune_allocator() -> None:
    """Makes glibc hand large freed blocks back to the system: with its default, the
    threshold for mapping large blocks grows after the first one is freed, and a server
    that held many pages for slow clients kept that memory after they left (measured: 318
    MB kept after 100 such clients, 52 MB with a fixed threshold). Nothing elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def read_secrets(path: str) -> tuple[bytes, ...]:
    """The secrets in a secret file: one per line, the first signs new tokens, every one
    verifies (rotation); blank lines and lines starting with # are ignored.

    Raises:
        CommandError: The file cannot be read, holds no secret, or a secret is too short.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise CommandError(f"the secret file {path!r} is not a regular file")
        with open(path, "rb") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read the secret file {path!r}: {exc.strerror}") from None
    secrets = tuple(
        line.strip() for line in lines if line.strip() and not line.strip().startswith(b"#")
    )
    if not secrets:
        raise CommandError(f"the secret file {path!r} holds no secret")
    for secret in secrets:
        try:
            check_secret(secret)
        except TokenError as exc:
            raise CommandError(f"the secret file {path!r}: {exc}") from None
    if mode & 0o077:
        print(
            f"trio-sync: warning: {path} can be read by other users (chmod 600 it)",
            file=sys.stderr,
        )
    return secrets


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


def _token(args: argparse.Namespace) -> int:
    secret = read_secrets(args.secret_file)[0]
    print(
        issue_token(
            secret,
            store_id=args.store,
            client_id=args.client,
            expires_at=time.time() + args.ttl,
        )
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sync", description="A local-first event-log sync engine for Trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "serve",
        help="run a sync server",
        description="Serves the default store at ws://HOST:PORT and store S at "
        "ws://HOST:PORT/S; GET /healthz and /metrics on the same port. SIGINT or SIGTERM "
        "shut it down gracefully (a second one at once).",
    )
    run.add_argument(
        "--db", required=True, type=_db_path, help="the server's SQLite file (created if missing)"
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on")
    run.add_argument("--port", type=_port, default=0, help="port (0: any free port)")
    run.add_argument(
        "--port-fallback",
        type=_count,
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
    run.add_argument("--schema-name", default="default", help="application schema name")
    run.add_argument(
        "--schema-version", type=_version, default=1, help="application schema version"
    )
    limits = run.add_argument_group("limits (0 or absent: the default)")
    for flag, kind, text in (
        ("--max-frame-bytes", _count, "largest frame"),
        ("--max-event-bytes", _count, "largest event (name + args as JSON)"),
        ("--max-push-events", _count, "most events in one push"),
        ("--max-connections", _count, "open connections in total"),
        ("--max-connections-per-store", _count, "connections to one store"),
        ("--max-stores", _count, "stores in all (with --create-stores)"),
        ("--idle-timeout", _seconds, "seconds a connection may stay silent"),
        ("--messages-per-second", _seconds, "messages read per connection per second"),
    ):
        limits.add_argument(flag, type=kind, default=0, help=text)
    run.add_argument(
        "--shutdown-grace",
        type=_seconds,
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

    token = commands.add_parser(
        "token",
        help="sign a token that lets one client sync one store",
        description="Prints a token for open_client(..., token=...). Secrets are never "
        "printed; the token itself is a credential: treat it like a password.",
    )
    token.add_argument("--secret-file", required=True, help="the server's secret file")
    token.add_argument("--store", required=True, type=_store_id, help="the store id")
    token.add_argument("--client", required=True, type=_client_id, help="the client id")
    token.add_argument(
        "--ttl", type=_seconds, default=30 * 24 * 3600, help="seconds it is valid (30 days)"
    )

    demo = commands.add_parser(
        "demo", help="an embedded server and two clients syncing on loopback"
    )
    demo.add_argument("--events", type=int, default=50, help="events each client commits")
    demo.add_argument("--seed", type=int, default=1, help="seed for what the clients commit")

    replay = commands.add_parser(
        "replay",
        help="run one simulated run again from its seed and show its trace",
        description="Replays run_scenario (the simulator's own workload), or your own "
        "workload with --workload module:function, from its seed.",
    )
    replay.add_argument("--seed", type=int, required=True, help="the run's seed")
    replay.add_argument(
        "--policy",
        choices=["supervised", "park"],
        default=None,
        help="the clients' push policy (run_scenario only; default supervised)",
    )
    replay.add_argument(
        "--scenario",
        choices=["lost-ack", "lost-ack-and-echo"],
        help="a canonical reproduction (pins every parameter)",
    )
    replay.add_argument("--full-trace", action="store_true", help="print every step")
    replay.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pin a parameter, e.g. --param clients=2 (repeatable)",
    )
    replay.add_argument(
        "--workload",
        metavar="MODULE:FUNCTION",
        help="replay your own workload (async def workload(world)) under run_simulation",
    )
    replay.add_argument(
        "--invariant", metavar="MODULE:FUNCTION", help="the invariant checked at the end"
    )
    replay.add_argument(
        "--step-invariant", metavar="MODULE:FUNCTION", help="the invariant checked every step"
    )
    replay.add_argument(
        "--shrink",
        action="store_true",
        help="look for the smallest parameters (fewer faults, fewer clients) that still fail",
    )
    replay.add_argument("--max-runs", type=int, default=100, help="how many runs --shrink may take")

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    stall = benches.add_parser(
        "stall", help="randomized scenarios under each push policy: stalls and convergence"
    )
    stall.add_argument("--scenarios", type=int, default=200, help="scenarios per policy")
    stall.add_argument("--seed", type=int, default=0, help="first seed")
    stall.add_argument("--jobs", type=int, default=0, help="processes (0: one per core)")
    stall.add_argument("--plot", default="stall.png", help="PNG of pending events over time")
    return parser


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _version(text: str) -> int:
    value = _count(text)
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value} does not fit in 64 bits")
    return value


def _db_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the database path is empty")
    if text == ":memory:" or text.startswith("file:"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a file path: a server's log must survive a restart"
        )
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, non-negative number")
    return value


def _store_id(text: str) -> str:
    if not valid_store_id(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a store id (letters, digits, _ . -, at most 64)"
        )
    return text


def _client_id(text: str) -> str:
    try:
        return check_identifier(text, "client id", MAX_CLIENT_ID_LENGTH)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sync`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            tune_allocator()
            raise_file_limit((args.max_connections or ServerLimits().max_connections) + 64)
            logging.basicConfig(
                level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
            trio.run(_serve_until_signalled, args)
            return 0
        if args.command == "token":
            return _token(args)
        if args.command == "demo":
            from ._demo import main as demo_main

            return demo_main(args.events, args.seed)
        if args.command == "replay":
            from ._replay import replay

            try:
                return replay(
                    args.seed,
                    args.policy,
                    args.scenario,
                    args.full_trace,
                    args.param,
                    workload=args.workload,
                    invariant=args.invariant,
                    step_invariant=args.step_invariant,
                    shrinking=args.shrink,
                    max_runs=args.max_runs,
                )
            except (ValueError, TypeError) as exc:
                print(f"trio-sync replay: {exc}", file=sys.stderr)
                return 2
        if args.command == "bench":
            from ._bench_stall import main as bench_main

            return bench_main(args.scenarios, args.seed, args.jobs, args.plot)
    except TrioSyncError as exc:
        print(f"trio-sync {args.command}: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
