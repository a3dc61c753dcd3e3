"""The server as a raw WebSocket peer sees it: handshake, errors, fan-out, slow clients."""

from __future__ import annotations

import json

import attrs
import pytest
import trio
import trio_websocket

import trio_sync
from trio_sync.protocol import Error, Event, Pull, PullPage, Push, PushAck, Welcome, encode

from ..conftest import WAIT, ClientFactory, wait_converged
from ._raw import hello, raw_websocket, receive


async def test_malformed_frame_gets_a_reason_and_the_server_keeps_serving(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    async with raw_websocket(server.url) as ws:
        await ws.send_message(encode(hello("raw")))
        assert isinstance(await receive(ws), Welcome)
        # What was tried: a push whose client_seq is a string.
        await ws.send_message(json.dumps({"type": "ping", "nonce": "one"}))
        reply = await receive(ws)
        assert isinstance(reply, Error)
        assert "expected int, got str @ ping.nonce" in reply.reason
        with trio.fail_after(WAIT), pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()  # the server closed the connection
    async with open_test_client(server.url, "A") as client:
        await client.commit("still", {"works": True})
        await wait_converged(client)


async def test_not_json_at_all_is_answered_too(server: trio_sync.Server) -> None:
    async with raw_websocket(server.url) as ws:
        await ws.send_message("{{{{")
        reply = await receive(ws)
        assert isinstance(reply, Error) and "not valid JSON" in reply.reason


async def test_first_message_must_be_hello(server: trio_sync.Server) -> None:
    async with raw_websocket(server.url) as ws:
        await ws.send_message(encode(Pull(1, 0)))
        reply = await receive(ws)
        assert isinstance(reply, Error) and "expected 'hello' first, got 'pull'" in reply.reason


async def test_wrong_schema_is_a_fatal_error(server: trio_sync.Server) -> None:
    async with raw_websocket(server.url) as ws:
        await ws.send_message(
            encode(attrs.evolve(hello("raw"), schema_name="todo", schema_version=9))
        )
        reply = await receive(ws)
        assert isinstance(reply, Error) and reply.fatal
        assert "'todo' v9 does not match the server's 'default' v1" in reply.reason


async def test_pusher_and_other_pullers_all_get_the_events_live(
    server: trio_sync.Server,
) -> None:
    async with (
        raw_websocket(server.url) as a,
        raw_websocket(server.url) as b,
    ):
        for ws, name in ((a, "A"), (b, "B")):
            await ws.send_message(encode(hello(name)))
            assert isinstance(await receive(ws), Welcome)
            await ws.send_message(encode(Pull(1, 0)))
        events = (Event("x", {"i": 1}, "A", 1), Event("x", {"i": 2}, "A", 2))
        await a.send_message(encode(Push(7, 0, events)))
        seen_by_a = [await receive(a), await receive(a)]
        assert PushAck(7, 1, (1, 2)) in seen_by_a  # the ack...
        echo = next(m for m in seen_by_a if isinstance(m, PullPage))
        assert echo.events == (events[0].at(1), events[1].at(2))  # ...and its own echo
        page = await receive(b)
        assert isinstance(page, PullPage) and page.events == echo.events and page.head == 2


async def test_a_client_that_never_reads_does_not_hold_up_the_others(
    server: trio_sync.Server, open_test_client: ClientFactory
) -> None:
    big = "x" * 20_000
    async with raw_websocket(server.url) as stalled:
        await stalled.send_message(encode(hello("stalled")))
        assert isinstance(await receive(stalled), Welcome)
        await stalled.send_message(encode(Pull(1, 0)))  # ...and then never reads again
        async with (
            open_test_client(server.url, "A", push_batch_size=50) as a,
            open_test_client(server.url, "B") as b,
        ):
            for i in range(600):  # 12 MB of events: far more than the socket buffers hold
                await a.commit("big", {"i": i, "pad": big})
            await wait_converged(a, b)
            assert len(b.confirmed_events()) == 600
