"""A session that ends leaves no reference cycles behind: its connection, pages and
cancel scopes are freed at once by reference counting, not at the cycle collector's next
full run (which ``trio-sync serve`` makes rare: ``tune_collector``)."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

import trio_sync
from trio_sync.protocol import Event, Pull, PullPage, Push, PushAck, Welcome, encode
from trio_sync.server import ServerSession

from ..conftest import WAIT, cyclic_garbage_of
from ._raw import hello, raw_websocket, receive


async def all_sessions_ended(server: trio_sync.Server) -> None:
    with trio.fail_after(WAIT):
        while server._control.hub.sessions:  # noqa: ASYNC110  (closed and untracked)
            await trio.sleep(0.01)


async def test_sessions_ended_every_way_leave_no_cycles(
    server: trio_sync.Server, collector_off: None
) -> None:
    # What was tried: a client that leaves while its pull stream waits and after a push
    # was answered (the session's nursery has tasks to cancel), one whose hello is refused,
    # one that sends a malformed message mid-session, one that sends no hello at all.
    for index in range(3):
        async with raw_websocket(server.url) as ws:
            await ws.send_message(encode(hello(f"leaver-{index}")))
            assert isinstance(await receive(ws), Welcome)
            event = Event("note", {"i": index}, f"leaver-{index}", 1)
            await ws.send_message(encode(Push(1, index, (event,))))
            await ws.send_message(encode(Pull(1, 0)))
            kinds = {type(await receive(ws)) for _ in range(2)}
            assert kinds == {PushAck, PullPage}
    async with raw_websocket(server.url) as ws:
        await ws.send_message(json.dumps({"type": "hello", "protocol_version": 999}))
        with trio.fail_after(WAIT), pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()
    async with raw_websocket(server.url) as ws:
        await ws.send_message(encode(hello("malformed")))
        assert isinstance(await receive(ws), Welcome)
        await ws.send_message(encode(Pull(1, 0)))
        await ws.send_message("{not json")
        with trio.fail_after(WAIT), pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()
    async with raw_websocket(server.url) as ws:
        await ws.send_message(encode(Pull(1, 0)))
        with trio.fail_after(WAIT), pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()
    await all_sessions_ended(server)
    assert cyclic_garbage_of(ServerSession) == 0
