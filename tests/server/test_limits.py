"""Every limit holds, each refusal names it, and one client over a limit never slows
another. Exact times under MockClock where time is the point; real sockets where the
point is what a socket does (a full buffer, a cut frame, a thousand connections)."""

from __future__ import annotations

import itertools
import re

import pytest
import trio
import trio.testing
import trio_websocket

import trio_sync
from trio_sync import StoreFull
from trio_sync.protocol import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    Ping,
    Pong,
    Pull,
    PullPage,
    Welcome,
    WireLimits,
    decode,
    encode,
)
from trio_sync.server import Hub, ServerLimits

from .._virtual import World
from ..conftest import WAIT, ClientFactory, ServerFactory, wait_converged
from ._raw import http_get, raw_websocket, say_hello, wait_for_metric


def hello(client_id: str) -> Hello:
    return Hello(PROTOCOL_VERSION, client_id, "default", 1, None, 0)


# --- virtual time -----------------------------------------------------------------------


async def test_a_silent_connection_is_closed_at_the_idle_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(limits=ServerLimits(idle_timeout=30))
    async with world.network.connect(world.url, client_id="raw") as conn:
        await conn.send(hello("raw"))
        assert isinstance(await conn.receive(), Welcome)
        assert await conn.receive() == Error("nothing received for 30s (idle_timeout)")
        assert trio.current_time() == 30.0


async def test_a_client_that_pings_is_never_idle(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(limits=ServerLimits(idle_timeout=12))
    async with world.client("A") as client:  # heartbeat every 5 s
        await trio.sleep(300)
        assert client.status.state == "synced"
    connects = [t for t, _, what, d in world.trace if what == "phase" and d["phase"] == "connected"]
    assert connects == [0.0]


async def test_a_fast_sender_is_slowed_to_the_rate_limit(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(limits=ServerLimits(messages_per_second=10, message_burst=5))
    async with world.network.connect(world.url, client_id="raw") as conn:
        await conn.send(hello("raw"))
        assert isinstance(await conn.receive(), Welcome)
        for nonce in range(25):
            await conn.send(Ping(nonce))
        arrivals = []
        for _ in range(25):
            assert isinstance(await conn.receive(), Pong)
            arrivals.append(trio.current_time())
    # A burst of 5 at once, then one every 1/10 s: the 25th at 2 s.
    assert arrivals[:5] == [0.0] * 5
    assert arrivals[5:] == pytest.approx([0.1 * i for i in range(1, 21)])


async def test_connections_per_store_are_limited_with_a_named_refusal(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(limits=ServerLimits(max_connections_per_store=2))
    async with (
        world.network.connect(world.url, client_id="a") as a,
        world.network.connect(world.url, client_id="b") as b,
    ):
        for conn, name in ((a, "a"), (b, "b")):
            await conn.send(hello(name))
            assert isinstance(await conn.receive(), Welcome)
        async with world.network.connect(world.url, client_id="c") as c:
            await c.send(hello("c"))
            refusal = await c.receive()
            assert refusal == Error(
                "store 'default' has 2 connections: the limit is 2 (max_connections_per_store)"
            )
    async with world.network.connect(world.url, client_id="c") as c:  # room again
        await c.send(hello("c"))
        assert isinstance(await c.receive(), Welcome)


async def test_a_full_disk_is_refused_distinctly_retried_with_backoff_and_healed(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    store = await world.start_server()
    async with world.client("A") as client:
        await client.commit("small", {})
        await client.wait_synced()
        # What was tried: the server's database may not grow (SQLITE_FULL, as on a full
        # disk). The client keeps its events, shows why, and backs off.
        pages = store._db.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        store._db._conn.execute(f"PRAGMA max_page_count = {pages}")
        for i in range(20):
            await client.commit("big", {"i": i, "pad": "x" * 20_000})
        status = await client.wait_status(lambda s: "storage is full" in (s.last_error or ""))
        assert status.state == "syncing" and status.pending == 20
        await trio.sleep(60)
        sends = world.times("A", "push.send")[1:]
        gaps = [later - earlier for earlier, later in itertools.pairwise(sends)]
        # Backing off (1, 2, 4, then 8 s, each jittered by up to half): not a storm.
        assert len(sends) <= 14, sends
        assert gaps[0] < 1.0 and min(gaps[4:]) >= 4.0, gaps
        assert [t for t, _, w, d in world.trace if w == "phase" and d["phase"] == "connected"] == [
            0.0
        ]  # the connection stays up
        store._db._conn.execute("PRAGMA max_page_count = 1073741823")
        status = await client.wait_synced()
        assert status.pending == 0 and status.upstream_head == 21


async def test_a_server_that_drops_every_connection_is_retried_with_growing_backoff(
    world: World, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(self: Hub, store_id: str) -> None:
        raise StoreFull("store 'server.sqlite3': the disk is full")

    monkeypatch.setattr(Hub, "open_store", full)
    await world.start_server()
    async with world.client("A") as client:
        await client.commit("kept", {})
        await trio.sleep(60)
        status = client.status
        assert "the disk is full" in (status.last_error or "")
        assert client.pending_events()[0].name == "kept"
    attempts = [t for t, _, w, d in world.trace if w == "phase" and d["phase"] == "connecting"]
    # Backoff 1, 2, 4, 8, 8 ... (jittered by up to half): some ten tries, not thousands.
    assert 5 <= len(attempts) <= 14, attempts


# --- real sockets -----------------------------------------------------------------------


async def test_past_max_connections_new_connections_are_answered_503(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(limits=ServerLimits(max_connections=2))
    async with raw_websocket(server.url), raw_websocket(server.url):
        with pytest.raises(trio_sync.ConnectError, match=r"HTTP 503.*max_connections"):
            async with raw_websocket(server.url):
                pass
        async with open_test_client(server.url, "A") as client:
            status = await client.wait_status(lambda s: s.last_error is not None)
            assert "HTTP 503" in (status.last_error or "")
    async with open_test_client(server.url, "A") as client:  # room again
        await client.commit("x", {})
        await wait_converged(client)


async def test_history_pages_are_bounded_in_bytes(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    limits = ServerLimits(
        wire=WireLimits(max_frame_bytes=1024 * 1024, max_event_bytes=60_000),
        max_page_bytes=200_000,
    )
    server = await open_server(limits=limits)
    async with open_test_client(server.url, "A", push_batch_size=500) as writer:
        for i in range(40):
            await writer.commit("big", {"i": i, "pad": "x" * 50_000})
        await wait_converged(writer)
    async with raw_websocket(server.url) as ws:
        assert isinstance(await say_hello(ws), Welcome)
        await ws.send_message(encode(Pull(1, 0)))
        got, sizes = 0, []
        while got < 40:
            with trio.fail_after(WAIT):
                frame = await ws.get_message()
            page = decode(frame)
            assert isinstance(page, PullPage)
            got += len(page.events)
            sizes.append(len(frame))
    assert max(sizes) <= 200_000 and len(sizes) >= 10, sizes


async def test_the_in_memory_tail_is_bounded_in_bytes(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(limits=ServerLimits(max_tail_bytes=300_000))
    async with open_test_client(server.url, "A") as client:
        for i in range(100):
            await client.commit("big", {"i": i, "pad": "x" * 10_000})
        await wait_converged(client)
        _, body = await http_get(server.url, "/metrics")
    match = re.search(rb"^trio_sync_tail_bytes (\S+)$", body, re.M)
    assert match and 0 < float(match.group(1)) <= 300_000


async def test_a_pull_replaced_while_its_page_is_being_sent_never_cuts_a_frame(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    # What the probe did: a pull whose page send is blocked (the client does not read),
    # then a new pull, which cancelled the old one mid-frame: "invalid opcode".
    async with open_test_client(server.url, "A", push_batch_size=500) as writer:
        for i in range(300):
            await writer.commit("big", {"i": i, "pad": "x" * 20_000})
        await wait_converged(writer)
    for _ in range(3):
        async with raw_websocket(server.url) as ws:
            assert isinstance(await say_hello(ws), Welcome)
            for pull_id in range(1, 6):
                await ws.send_message(encode(Pull(pull_id, 0)))
                # Until the server is stuck writing to our full socket buffer.
                await trio.testing.wait_all_tasks_blocked(cushion=0.02)
            newest = 0
            while newest < 300:
                with trio.fail_after(WAIT):
                    page = decode(await ws.get_message())  # every frame whole
                assert isinstance(page, PullPage)
                if page.pull_id == 5 and page.events:
                    newest = page.events[-1].seq or 0


async def test_a_thousand_idle_or_unread_connections_do_not_slow_a_normal_client(
    server: trio_sync.Server, open_test_client: ClientFactory, nursery: trio.Nursery
) -> None:
    opened = 0
    ready = trio.Event()

    async def hold(index: int) -> None:
        nonlocal opened
        async with raw_websocket(server.url) as ws:
            assert isinstance(await say_hello(ws, f"idle-{index}"), Welcome)
            if index % 2:  # a puller that never reads a byte again
                await ws.send_message(encode(Pull(1, 0)))
            opened += 1
            if opened == 1000:
                ready.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as holders:
        for index in range(1000):
            holders.start_soon(hold, index)
        with trio.fail_after(120):
            await ready.wait()
        async with (
            open_test_client(server.url, "A") as a,
            open_test_client(server.url, "B") as b,
        ):
            for i in range(200):
                await a.commit("e", {"i": i, "pad": "x" * 2_000})
            await wait_converged(a, b)
            assert len(b.confirmed_events()) == 200
            status, body = await http_get(server.url, "/metrics")
            assert status == 200 and b"trio_sync_connections 1002.0" in body
        holders.cancel_scope.cancel()


async def test_an_event_too_large_for_the_server_is_refused_at_commit(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    limits = ServerLimits(
        wire=WireLimits(max_frame_bytes=1024 * 1024, max_event_bytes=10_000),
        max_page_bytes=1024 * 1024,
    )
    server = await open_server(limits=limits)
    async with open_test_client(server.url, "A") as client:
        await client.commit("hello", {})
        await wait_converged(client)  # the welcome told the client the server's limits
        with pytest.raises(trio_sync.InvalidEvent, match="exceeds the limit of 10000 bytes"):
            await client.commit("big", {"pad": "x" * 20_000})
        assert client.pending_events() == []


def test_limits_that_could_not_deliver_an_accepted_event_are_refused() -> None:
    with pytest.raises(ValueError, match="max_page_bytes must lie between"):
        ServerLimits(max_page_bytes=1000)


async def test_a_never_reading_client_is_dropped_at_the_send_timeout(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(limits=ServerLimits(send_timeout=1.0))
    async with (
        open_test_client(server.url, "A", push_batch_size=500) as writer,
        raw_websocket(server.url) as stalled,
    ):
        assert isinstance(await say_hello(stalled, "stalled"), Welcome)
        await stalled.send_message(encode(Pull(1, 0)))  # ...and never reads again
        for i in range(300):
            await writer.commit("big", {"i": i, "pad": "x" * 20_000})
        await wait_converged(writer)  # the others are not held up meanwhile
        await wait_for_metric(server.url, b'trio_sync_refusals_total{reason="too_slow"} 1.0')
        with trio.fail_after(WAIT):
            while True:  # what was queued, then the end
                try:
                    decode(await stalled.get_message())
                except trio_websocket.ConnectionClosed:
                    break
