"""Recovery with a real server: a rebuilt server database, a reused client id, a URL that
answers HTTP, bad URLs, retry(), and the notifications each one brings."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_sync
from trio_sync import IncompatibleServer, InvalidURL
from trio_sync._errors import TransportError
from trio_sync.protocol import SyncState, WireLimits
from trio_sync.server import ServerLimits
from trio_sync.store import ClientStore

from ..conftest import FAST, WAIT, ClientFactory, ServerFactory


async def test_rebuilt_server_is_incompatible_and_reset_keeps_every_pending_event(
    nursery: trio.Nursery, tmp_path: Path, open_test_client: ClientFactory
) -> None:
    # Tried: the server's database deleted and recreated while a client had synced with it
    # and then committed offline; the client must say "incompatible", then reset().
    first: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "one.sqlite3"))
    async with open_test_client(first.url, "A") as a:
        await a.commit("before", {"n": 0})
        with trio.fail_after(WAIT):
            await a.wait_synced()
    await first.shutdown()

    rebuilt: trio_sync.Server = await nursery.start(trio_sync.serve, str(tmp_path / "two.sqlite3"))
    async with open_test_client(rebuilt.url, "B") as b:  # someone else writes first
        await b.commit("other", {"n": 1})
        with trio.fail_after(WAIT):
            await b.wait_synced()

    async with open_test_client(rebuilt.url, "A") as a:
        await a.commit("offline", {"n": 2})
        await a.commit("offline", {"n": 3})
        with trio.fail_after(WAIT), pytest.raises(IncompatibleServer, match="replaced"):
            await a.wait_synced()
        assert a.status.state == "incompatible" and a.status.pending == 2
        assert [n.kind for n in a.recent_events() if n.kind == "incompatible"] == ["incompatible"]

        events = a.subscribe()
        report = await a.reset(keep_pending=True)
        assert report.kept == 2 and report.dropped == 0
        assert report.saved_to is not None
        text = await trio.Path(report.saved_to).read_text()
        saved = [json.loads(line) for line in text.splitlines()]
        assert [(item["name"], item["args"]) for item in saved] == [
            ("offline", {"n": 2}),
            ("offline", {"n": 3}),
        ]
        recovery = await events.__anext__()
        assert recovery.kind == "recovery" and recovery["what"] == "reset"

        with trio.fail_after(WAIT):
            await a.wait_synced()
        log = [(e.name, e.args["n"]) for e in a.confirmed_events()]
        # The new server's log, then the kept events; the old server's event is gone with it.
        assert log == [("other", 1), ("offline", 2), ("offline", 3)]
        assert a.pending_events() == []


async def test_reused_client_id_is_refused_with_a_clear_reason_and_reset_continues_it(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    # Tried: the README's fixed client_id="A" used by two stores (a reinstalled device).
    async with trio_sync.open_client(
        server.url, str(tmp_path / "first.sqlite3"), client_id="A", timings=FAST
    ) as first:
        for n in range(3):
            await first.commit("from.first", {"n": n})
        with trio.fail_after(WAIT):
            await first.wait_synced()

    async with trio_sync.open_client(
        server.url, str(tmp_path / "second.sqlite3"), client_id="A", timings=FAST
    ) as second:
        await second.commit("from.second", {"n": 0})
        with trio.fail_after(WAIT), pytest.raises(IncompatibleServer) as refused:
            await second.wait_synced()
        reason = str(refused.value)
        assert "client id 'A' is already used by another store" in reason
        assert "client_seq 3" in reason and "reset()" in reason
        assert second.status.state == "incompatible"
        assert second.status.pending == 1  # nothing was pushed

        await second.reset(keep_pending=True)
        with trio.fail_after(WAIT):
            await second.wait_synced()
        mine = [(e.client_seq, e.name) for e in second.confirmed_events() if e.client_id == "A"]
        assert mine == [(1, "from.first"), (2, "from.first"), (3, "from.first"), (4, "from.second")]


async def test_generated_client_id_is_kept_in_the_store(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    path = str(tmp_path / "c.sqlite3")
    async with trio_sync.open_client(server.url, path, timings=FAST) as client:
        generated = client.client_id
    async with trio_sync.open_client(server.url, path, timings=FAST) as client:
        assert client.client_id == generated and len(generated) == 32


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "not a url",
        "ws://",
        "ws://host:99999",
        "ws://host:0",
        "",
        "ws://[::1/",
        "ws://host/a b",  # a path that names no store the server could have
        "ws://host/..",
        "ws://host/%zz",
        "ws://host/" + "s" * 5000,
    ],
)
async def test_url_that_can_never_work_is_refused_at_once(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidURL) as refused:
        async with trio_sync.open_client(url, str(tmp_path / "c.sqlite3")):
            pass  # pragma: no cover
    assert isinstance(refused.value, ValueError)
    assert not (tmp_path / "c.sqlite3").exists()  # refused before anything was opened


async def test_empty_url_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidURL, match="at least one"):
        async with trio_sync.open_client([], str(tmp_path / "c.sqlite3")):
            pass  # pragma: no cover


async def _serve_http_404(task_status: trio.TaskStatus[int]) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await stream.receive_some(65536)
                await stream.send_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here\n"
                )
            except trio.BrokenResourceError:
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def test_plain_http_answer_never_crashes_and_becomes_stuck_then_retry(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # Tried: a URL where a proxy answers 404 (as `python -m http.server` would).
    port = await nursery.start(_serve_http_404)
    async with trio_sync.open_client(
        f"ws://127.0.0.1:{port}", str(tmp_path / "c.sqlite3"), timings=FAST
    ) as client:
        await client.commit("kept", {})
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: s.state == "stuck")
        assert status.connect_attempts >= 3
        assert "HTTP 404" in (status.last_error or "")
        errors = [n for n in client.recent_events() if n.kind == "connection.error"]
        assert [n["attempt"] for n in errors[:3]] == [1, 2, 3]
        attempts = status.connect_attempts
        client.retry()
        with trio.fail_after(WAIT):
            await client.wait_status(lambda s: s.connect_attempts > attempts)
        assert client.pending_events()[0].name == "kept"


async def test_server_down_is_disconnected_not_stuck(tmp_path: Path) -> None:
    # Nothing listens: an offline period, which waiting does heal.
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio_sync.open_client(
        f"ws://127.0.0.1:{port}", str(tmp_path / "c.sqlite3"), timings=FAST
    ) as client:
        with trio.fail_after(WAIT):
            await client.wait_status(lambda s: s.connect_attempts >= 4)
        assert client.status.state in ("disconnected", "connecting")


async def test_failover_moves_to_the_next_url(server: trio_sync.Server, tmp_path: Path) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    async with trio_sync.open_client(
        [dead, server.url], str(tmp_path / "c.sqlite3"), timings=FAST
    ) as client:
        await client.commit("x", {})
        with trio.fail_after(WAIT):
            await client.wait_synced()


async def test_status_through_a_server_stop_and_restart(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server()
    async with open_test_client(server.url, "A") as client:
        seen: list[str] = []
        events = client.subscribe()
        with trio.fail_after(WAIT):
            synced = await client.wait_synced()
        assert synced.last_synced_at is not None and synced.since is not None
        assert synced.connect_attempts == 0
        await server.shutdown()
        with trio.fail_after(WAIT):
            down = await client.wait_status(lambda s: s.connect_attempts >= 2)
        assert down.state in ("disconnected", "connecting")
        assert down.last_synced_at == pytest.approx(synced.last_synced_at, abs=5)
        restarted = await open_server(port=int(server.url.rsplit(":", 1)[1]))
        assert restarted.url == server.url
        with trio.fail_after(WAIT):
            back = await client.wait_synced()
        assert back.connect_attempts == 0 and back.since is not None
        while (note := events.get_nowait()) is not None:
            seen.append(note.kind)
        assert "connection.offline" in seen and "connection.online" in seen
        assert seen.index("connection.offline") < len(seen) - 1 - seen[::-1].index(
            "connection.online"
        )
        assert "sync.complete" in seen


async def test_reset_is_refused_while_the_server_syncs_with_the_client(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # Tried: reset() on a healthy client with a push on its way. Its events may be on the
    # server already; renumbered, they would be appended twice.
    async with open_test_client(server.url, "A") as a:
        await a.commit_many(("e", {"i": i}) for i in range(300))
        with pytest.raises(trio_sync.ResetRefused, match="incompatible"):
            await a.reset(keep_pending=True)
        with trio.fail_after(WAIT):
            await a.wait_synced()
        with pytest.raises(trio_sync.ResetRefused, match="'synced'"):
            await a.reset()
        assert [e.args["i"] for e in a.confirmed_events()] == list(range(300))


async def test_subscribe_on_a_closed_client_says_so(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with open_test_client(server.url, "A") as a:
        pass
    with pytest.raises(trio_sync.ClientClosed):
        a.subscribe()


async def small_limits_and_offline_commits(
    open_server: ServerFactory, tmp_path: Path, commits: list[tuple[str, int]]
) -> trio_sync.Server:
    """A server taking events of 1,000 bytes at most, and client A's store holding
    ``commits`` (name, bytes of padding) made offline under the default limits, before A
    ever heard the server's."""
    limits = ServerLimits(wire=WireLimits(max_event_bytes=1000), max_page_bytes=4096)
    server: trio_sync.Server = await open_server(limits=limits)
    store = ClientStore.open(str(tmp_path / "A.sqlite3"), "A")
    state = SyncState("A")
    for name, size in commits:
        store.append_pending(state.commit(name, {"s": "x" * size}))
    store.close()
    return server


async def test_an_event_the_servers_limits_refuse_leaves_the_client_stuck_until_reset(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Tried: events committed before the client ever heard the server's limits (offline,
    # first run: commit() follows the default 1 MiB), one of them over the server's 1,000
    # bytes. Every push carried it, the server closed the connection each time, and the
    # client was stuck for good: reset() refused, and retry() tried the same push again.
    server = await small_limits_and_offline_commits(
        open_server, tmp_path, [("small", 1), ("big", 5000), ("after", 1)]
    )

    async with open_test_client(server.url, "A") as a, open_test_client(server.url, "B") as b:
        with trio.fail_after(WAIT):
            status = await a.wait_status(lambda s: s.state == "stuck")
        assert status.connected and status.pending == 2  # the small one went first
        # Stuck is said once reset() may run: "small" is confirmed here, not only acked.
        assert [e.name for e in a.confirmed_events()][:1] == ["small"]
        assert status.last_error is not None
        assert "pending event 2 ('big'): event of 5011 bytes exceeds the limit " in (
            status.last_error
        )
        assert "max_event_bytes=1000" in status.last_error and "reset()" in status.last_error
        await b.commit("from.b", {})  # a stuck push does not stop the pull
        with trio.fail_after(WAIT):
            await b.wait_synced()
            while len(a.confirmed_events()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert [e.name for e in a.confirmed_events()] == ["small", "from.b"]

        # Two resets at once (a review found the second one reset a client no longer
        # stuck, on a server that synced with it, and the block died): one resets.
        outcomes: list[object] = []

        async def reset() -> None:
            try:
                outcomes.append(await a.reset())
            except trio_sync.ResetRefused as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reset)
            nursery.start_soon(reset)
        [report] = [o for o in outcomes if isinstance(o, trio_sync.client.ResetReport)]
        [refused] = [o for o in outcomes if isinstance(o, trio_sync.ResetRefused)]
        assert "nothing to reset" in str(refused)
        assert (report.kept, report.dropped) == (1, 1)
        assert report.saved_to is not None
        text = await trio.Path(report.saved_to).read_text()
        assert [json.loads(line)["name"] for line in text.splitlines()] == ["big", "after"]
        with trio.fail_after(WAIT):
            await a.wait_synced()
            await b.wait_synced()
        expected = [("A", "small"), ("B", "from.b"), ("A", "after")]
        assert [(e.client_id, e.name) for e in a.confirmed_events()] == expected
        assert [(e.client_id, e.name) for e in b.confirmed_events()] == expected
        assert a.status.state == "synced" and a.pending_events() == []


async def test_a_client_stuck_when_its_block_exits_says_disconnected(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Tried: a client stuck on an event the server's limits refuse, then its block exits:
    # the status kept saying "stuck" (a reason from a connection that no longer exists).
    server = await small_limits_and_offline_commits(open_server, tmp_path, [("big", 5000)])
    async with open_test_client(server.url, "A") as a:
        with trio.fail_after(WAIT):
            await a.wait_status(lambda s: s.state == "stuck")
    assert (a.status.state, a.status.connected, a.status.last_error) == (
        "disconnected",
        False,
        None,
    )


def _copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        here, there = Path(f"{source}{suffix}"), Path(f"{target}{suffix}")
        there.unlink(missing_ok=True)
        if here.exists():
            shutil.copyfile(here, there)


async def test_after_a_restore_from_an_older_backup_reset_pushes_our_lost_events_again(
    nursery: trio.Nursery, tmp_path: Path, open_test_client: ClientFactory
) -> None:
    # Tried: the server's database restored from a backup taken before this client's last
    # ten events (the same log, shorter). The client is "incompatible" ("the server lost
    # events") and reset() used to keep only its pending event: the ten events the server
    # had acknowledged were gone from everywhere but this store, and reset dropped them.
    db, backup = tmp_path / "server.sqlite3", tmp_path / "backup.sqlite3"
    server: trio_sync.Server = await nursery.start(trio_sync.serve, str(db))
    async with open_test_client(server.url, "A") as a:
        for i in range(3):
            await a.commit("x", {"i": i})
        with trio.fail_after(WAIT):
            await a.wait_synced()
        await server.shutdown()
        _copy_database(db, backup)
        server = await nursery.start(partial(trio_sync.serve, str(db), port=server.port))
        a.retry()
        for i in range(3, 13):
            await a.commit("x", {"i": i})
        with trio.fail_after(WAIT):
            await a.wait_synced()
        await server.shutdown()
        _copy_database(backup, db)  # the restore
        server = await nursery.start(partial(trio_sync.serve, str(db), port=server.port))
        a.retry()
        await a.commit("x", {"i": 13})
        with trio.fail_after(WAIT), pytest.raises(IncompatibleServer, match="lost events"):
            await a.wait_synced()
        report = await a.reset()
        assert (report.kept, report.dropped) == (11, 0)
        assert report.saved_to is not None
        text = await trio.Path(report.saved_to).read_text()
        assert [json.loads(line)["args"]["i"] for line in text.splitlines()] == list(range(3, 14))
        with trio.fail_after(WAIT):
            await a.wait_synced()
    async with open_test_client(server.url, "B") as b:
        with trio.fail_after(WAIT):
            await b.wait_synced()
        assert [e.args["i"] for e in b.confirmed_events()] == list(range(14))


async def test_a_reset_right_after_open_client_does_not_wait_for_a_connection(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Tried: a client left stuck on an event the server's limits refuse (its store knows
    # them) is opened again and reset() at once, before its connection supervisor ever
    # ran. The reset waited for the end of a connection that had never started: for ever.
    server = await small_limits_and_offline_commits(
        open_server, tmp_path, [("small", 1), ("big", 5000)]
    )
    async with open_test_client(server.url, "A") as a:
        with trio.fail_after(WAIT):
            await a.wait_status(lambda s: s.state == "stuck")
    async with open_test_client(server.url, "A") as a:
        with trio.fail_after(WAIT):
            report = await a.reset()
            assert (report.kept, report.dropped) == (0, 1)
            await a.wait_synced()
        assert [e.name for e in a.confirmed_events()] == ["small"]


async def test_no_connection_starts_while_a_reset_right_after_open_client_runs(
    tmp_path: Path,
) -> None:
    # Tried (a review of the fix above): reset() at once after open_client, 20 times, with
    # a connector that notes whether the reset holds the store when a connection starts.
    # The supervisor's first wait for "resume" yields even though it is set; a reset that
    # began meanwhile found no connection running, and the supervisor then started one
    # while the reset changed the store (its pages were dropped as from before the
    # reset, and the ClientClosed that said so ended the client). 6 runs of 20 before.
    attempts: list[str] = []
    clients: list[trio_sync.Client] = []

    @asynccontextmanager
    async def connector(url: str) -> AsyncIterator[Any]:
        client = clients[-1]
        during = client._reset_lock.locked() and client._core.writer.exclusive.locked()
        attempts.append("during a reset" if during else "outside")
        await trio.lowlevel.checkpoint()
        raise TransportError("nothing listens here")
        yield  # an async generator, as a connector is

    async def every_call_in_a_thread(fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    for run in range(20):
        path = str(tmp_path / f"a{run}.sqlite3")
        with trio.fail_after(WAIT):
            async with trio_sync.open_client(
                "ws://127.0.0.1:1", path, connector=connector, run_store=every_call_in_a_thread
            ) as client:
                clients.append(client)
                client._core.incompatible = "as a rebuilt server makes it"  # reset() may run
                await client.reset()
    assert "during a reset" not in attempts
