"""Running a server: storage it cannot write, health and metrics, TLS, ports, logs, and a
graceful shutdown that loses nothing and that clients ride through on their own."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

import trio_sync
from trio_sync.store import PushRequest, ServerStore

from ..conftest import WAIT, ClientFactory, ServerFactory, wait_converged
from ..test_cli import CLI, start_serve
from ._raw import http_get, wait_for_metric

# --- storage it cannot write ------------------------------------------------------------


def as_unprivileged(argv: list[str]) -> list[str]:
    """The command run so that file permissions apply: as root, without the capability to
    override them (root otherwise writes a read-only file)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot apply")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *argv]


def serve_once(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_unprivileged([*CLI, "serve", "--db", str(db)]),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_server_on_a_read_only_database_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "server.sqlite3"
    ServerStore.open(str(db)).close()
    db.chmod(0o444)  # What was tried: the database file may not be written.
    result = serve_once(db)
    assert result.returncode == 1, result
    assert "cannot be written" in result.stderr and "Traceback" not in result.stderr
    assert "serving" not in result.stdout  # it never claimed to serve


def test_a_new_database_in_a_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = serve_once(folder / "server.sqlite3")
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1, result
    assert "cannot be written" in result.stderr and "Permission denied" in result.stderr
    assert "Traceback" not in result.stderr


async def test_healthz_says_whether_the_store_can_be_written(
    open_server: ServerFactory,
) -> None:
    server = await open_server()
    assert await http_get(server.url, "/healthz") == (200, b"ok\n")
    db = server._control.hub.db
    # What was tried: the database stops taking writes (as a read-only remount would).
    db._db._conn.execute("PRAGMA query_only = 1")
    server._control.hub._health_checked = 0.0  # do not wait out the answer's cache
    status, body = await http_get(server.url, "/healthz")
    assert status == 503 and b"cannot be written" in body
    db._db._conn.execute("PRAGMA query_only = 0")
    server._control.hub._health_checked = 0.0
    assert await http_get(server.url, "/healthz") == (200, b"ok\n")


async def test_metrics_count_connections_events_and_refusals(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server()
    async with open_test_client(server.url, "A") as a:
        for i in range(5):
            await a.commit("e", {"i": i})
        await wait_converged(a)
        status, body = await http_get(server.url, "/metrics")
    async with open_test_client(server.url + "/nope", "B") as b:
        await b.wait_status(lambda s: s.state == "incompatible")
    _, after = await http_get(server.url, "/metrics")
    assert status == 200
    text = body.decode()
    for line in (
        "trio_sync_connections 1.0",
        "trio_sync_events_appended_total 5.0",
        "trio_sync_storage_writable 1.0",
    ):
        assert line in text, text
    assert 'trio_sync_pushes_total{result="accepted"}' in text
    assert "trio_sync_sent_bytes_total" in text and "trio_sync_pull_lag_events_bucket" in text
    assert 'trio_sync_refusals_total{reason="unknown_store"} 1.0' in after.decode()


async def test_other_plain_http_requests_get_404(server: trio_sync.Server) -> None:
    status, body = await http_get(server.url, "/admin")
    assert status == 404 and b"/healthz" in body


async def test_logs_say_what_happened_and_never_show_a_token(
    open_server: ServerFactory, open_test_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sync")
    server = await open_server(auth_secrets=[b"s" * 32])
    async with open_test_client(server.url, "A", token="v1.not.valid") as client:
        await client.wait_status(lambda s: s.state == "incompatible")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"trio_sync server on {server.url}" in logged
    assert "tokens required (1 secret(s)), TLS off, unknown stores refused" in logged
    assert "limits: frame 4194304 B" in logged
    assert "refused 127.0.0.1:" in logged and "not authorized" in logged
    assert "v1.not.valid" not in logged


async def test_a_client_that_leaves_is_logged_as_leaving_not_as_lost(
    server: trio_sync.Server,
    open_test_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What was tried: a client whose open_client block ends normally. It used to drop its
    # TCP connection without the closing handshake, and every orderly exit read in the
    # server's log as a lost connection (1006 ABNORMAL_CLOSURE). Then the handshake's
    # reply went unread (the connection's reader was cancelled as the session ended), and
    # every exit waited out the closing time: made longer than WAIT here, it must not.
    monkeypatch.setattr(trio_sync.client._open, "LEAVE_TIMEOUT", 10 * WAIT)
    monkeypatch.setattr(trio_sync.transport._websocket, "CLOSE_TIMEOUT", 10 * WAIT)
    caplog.set_level(logging.INFO, logger="trio_sync")
    with trio.fail_after(WAIT):
        async with open_test_client(server.url, "leaver") as client:
            await client.commit("note", {})
            await client.wait_synced()
    with trio.fail_after(WAIT):
        while "'leaver' of store" not in caplog.text:  # noqa: ASYNC110
            await trio.sleep(0.01)
    ended = [r.getMessage() for r in caplog.records if "'leaver' of store" in r.getMessage()]
    assert len(ended) == 1 and "(1000 NORMAL_CLOSURE): client closed" in ended[0], ended


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_a_certificate_the_client_trusts(
    ca: trustme.CA, open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = await open_server(ssl_context=server_context)
    assert server.url.startswith("wss://127.0.0.1:")
    async with (
        open_test_client(server.url, "A", ssl_context=client_context) as a,
        open_test_client(server.url, "B", ssl_context=client_context) as b,
    ):
        await a.commit("secret", {"over": "tls"})
        await wait_converged(a, b)
        assert b.confirmed_events()[0].args == {"over": "tls"}
    # A client that does not trust the certificate does not connect, and says why.
    async with open_test_client(server.url, "C") as c:
        status = await c.wait_status(lambda s: "certificate verify failed" in (s.last_error or ""))
        assert status.state in ("connecting", "disconnected")


async def test_trio_sync_serve_with_certfile_and_keyfile(
    ca: trustme.CA, tmp_path: Path, open_test_client: ClientFactory
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    proc, line = await start_serve(
        "--db",
        str(tmp_path / "server.sqlite3"),
        "--certfile",
        str(tmp_path / "cert.pem"),
        "--keyfile",
        str(tmp_path / "key.pem"),
    )
    try:
        url = line.split(" at ")[1].strip()
        assert url.startswith("wss://")
        async with open_test_client(url, "A", ssl_context=client_context) as a:
            await a.commit("x", {})
            await wait_converged(a)
    finally:
        proc.kill()
        await proc.wait()


# --- ports ------------------------------------------------------------------------------


async def test_a_taken_port_falls_back_to_a_next_one(
    open_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    nursery: trio.Nursery,
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = await open_server(port=port, port_fallback=5)
        assert port < server.port <= port + 5
        assert f"port {port} is in use; trying {port + 1}" in caplog.text
        with pytest.raises(trio_sync.TransportError, match=f"cannot listen on 127.0.0.1:{port}"):
            await nursery.start(
                partial(trio_sync.serve, str(tmp_path / "other.sqlite3"), port=port)
            )


# --- graceful shutdown ------------------------------------------------------------------


async def test_shutdown_commits_and_answers_the_push_in_flight_then_says_going_away(
    open_server: ServerFactory,
    open_test_client: ClientFactory,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    writing, release = threading.Event(), threading.Event()
    apply = ServerStore.apply_pushes

    def slow_apply(self: ServerStore, requests: list[PushRequest]) -> object:
        writing.set()
        release.wait(WAIT)
        return apply(self, requests)

    async def in_a_thread(fn: Callable[..., object], *args: object) -> object:
        # Every write in a worker thread (the default runs fast ones on the event loop,
        # where slow_apply blocked the whole server until release.wait timed out).
        return await trio.to_thread.run_sync(fn, *args)

    monkeypatch.setattr(ServerStore, "apply_pushes", slow_apply)
    server = await open_server(run_store=in_a_thread)
    async with open_test_client(server.url, "A") as client:
        await client.commit("in flight", {})
        await trio.to_thread.run_sync(writing.wait, WAIT)  # the push is being committed
        stopped = trio.Event()

        async def shut_down() -> None:
            await server.shutdown()
            stopped.set()

        nursery.start_soon(shut_down)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: not s.connected)
        assert status.pending == 0  # the ack came before the goodbye
        # Said when the connection ended; the status may already tell of the next
        # connect attempt (refused: the server is gone) by the time this task looks.
        said = [n["error"] for n in client.recent_events() if n.kind == "connection.error"]
        assert "the server is shutting down" in str(said[0])
    with trio.fail_after(WAIT):
        await stopped.wait()  # shutdown() returns once the database is closed
    monkeypatch.undo()
    store = ServerStore.open(str(tmp_path / "server.sqlite3"))
    assert [e.name for e in store.read(0, 10)] == ["in flight"]
    store.close()


async def test_sigterm_closes_clients_with_1001_and_they_reconnect_to_the_restarted_server(
    tmp_path: Path, open_test_client: ClientFactory
) -> None:
    db = str(tmp_path / "server.sqlite3")
    proc, line = await start_serve("--db", db)
    url = line.split(" at ")[1].strip()
    port = url.rsplit(":", 1)[1]
    errors: list[str] = []

    def record(what: str, details: Mapping[str, object]) -> None:
        if what == "phase" and details["error"]:
            errors.append(str(details["error"]))

    try:
        async with (
            open_test_client(url, "A", trace=record) as a,
            open_test_client(url, "B") as b,
        ):
            for i in range(20):
                await a.commit("before", {"i": i})
            await wait_converged(a, b)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(WAIT):
                assert await proc.wait() == 0
            # The server's last word, before the reconnection attempts that follow.
            assert errors[0] == "server closed the connection: the server is shutting down"
            for i in range(10):  # offline meanwhile: kept, pushed later
                await a.commit("while down", {"i": i})
            proc, _ = await start_serve("--db", db, "--port", port)
            await wait_converged(a, b)  # on their own: nobody told them
            assert len(b.confirmed_events()) == 30
    finally:
        proc.kill()
        await proc.wait()


def test_cli_refuses_a_bad_port_up_front() -> None:
    result = subprocess.run(
        [*CLI, "serve", "--db", "x.sqlite3", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "99999 is not a port" in result.stderr


async def test_dead_clients_are_closed_and_counted_so_they_never_pile_up(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # Tried: 50 clients that said hello and then went silent (a laptop lid closed, a
    # process frozen): none answers a ping, none sends one.
    from trio_sync.server import ServerLimits

    from ._raw import raw_websocket, say_hello

    server = await open_server(limits=ServerLimits(idle_timeout=2.0))
    async with open_test_client(server.url, "live") as live, trio.open_nursery() as dead:
        for n in range(50):

            async def go_silent(n: int = n) -> None:
                async with raw_websocket(server.url) as ws:
                    await say_hello(ws, f"dead{n}")
                    await trio.sleep_forever()

            dead.start_soon(go_silent)
        await wait_for_metric(server.url, b'trio_sync_refusals_total{reason="idle"} 50.0')
        await wait_for_metric(server.url, b"trio_sync_connections 1.0")
        await live.commit("still", {})
        with trio.fail_after(WAIT):
            await live.wait_synced()  # heartbeats every 0.5 s: never idle
        dead.cancel_scope.cancel()
