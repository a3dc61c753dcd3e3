"""A session that ends leaves no reference cycles behind: its connection, pages and
cancel scopes are freed at once by reference counting, not at the cycle collector's next
full run (which ``trio-sync serve`` makes rare: ``tune_process``)."""

from __future__ import annotations

import gc
import json
import logging
import threading

import pytest
import trio
import trio.testing
import trio_websocket

import trio_sync
from trio_sync import StoreError
from trio_sync.protocol import (
    PROTOCOL_VERSION,
    Error,
    Event,
    Pull,
    PullPage,
    Push,
    PushAck,
    PushRejected,
    Welcome,
    encode,
)
from trio_sync.protocol._blob_messages import BlobHello, BlobWelcome
from trio_sync.server import ServerSession
from trio_sync.server._blobs import BlobSession

from ..conftest import (
    WAIT,
    ClientFactory,
    ServerFactory,
    cyclic_garbage_of,
    wait_converged,
)
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


async def test_a_push_refused_for_a_storage_error_leaves_no_cycles(
    server: trio_sync.Server, collector_off: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What was tried: the server's disk fails, so three clients' pushes are refused with a
    # storage error (they will retry), and the clients leave. The writer's one error was
    # raised in every session, and each push() frame held it through its job.
    hub = server._control.hub

    def failing_write(requests: object) -> object:
        raise StoreError("injected: the disk failed")

    monkeypatch.setattr(hub.db, "apply_pushes", failing_write)
    for index in range(3):
        async with raw_websocket(server.url) as ws:
            await ws.send_message(encode(hello(f"refused-{index}")))
            assert isinstance(await receive(ws), Welcome)
            event = Event("note", {"i": index}, f"refused-{index}", 1)
            await ws.send_message(encode(Push(1, 0, (event,))))
            rejected = await receive(ws)
            assert isinstance(rejected, PushRejected) and rejected.retryable
            assert "the disk failed" in rejected.reason
    await all_sessions_ended(server)
    assert cyclic_garbage_of(ServerSession) == 0


async def test_the_conversations_own_error_is_reported_when_a_task_fails_as_it_ends(
    open_server: ServerFactory,
    open_test_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What was tried: a client sends a malformed frame while its pull stream is reading
    # history in a worker thread, and that read then fails. The client must hear about
    # its malformed frame (as before the session's errors were raised after its nursery),
    # not about the server's storage; the read's failure is still logged.
    caplog.set_level(logging.INFO, logger="trio_sync.server")
    first = await open_server()
    async with open_test_client(first.url, "writer") as writer:
        await writer.commit_many([("note", {"i": i}) for i in range(5)])
        await wait_converged(writer)
    await first.shutdown()
    server = await open_server()  # its memory holds no history: a pull reads the file
    hub = server._control.hub
    reading = threading.Event()
    release = threading.Event()

    def failing_read(*args: object, **kwargs: object) -> object:
        reading.set()
        release.wait(WAIT)
        raise StoreError("injected: the read failed")

    monkeypatch.setattr(hub.db, "read", failing_read)
    async with raw_websocket(server.url) as ws:
        await ws.send_message(encode(hello("reader")))
        assert isinstance(await receive(ws), Welcome)
        await ws.send_message(encode(Pull(1, 0)))
        with trio.fail_after(WAIT):
            await trio.to_thread.run_sync(reading.wait)
        await ws.send_message("{not json")
        # The conversation has ended (it waits for the read's thread) once every task is
        # blocked; then the read fails.
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        release.set()
        reply = await receive(ws)
        assert isinstance(reply, Error) and "not valid JSON" in reply.reason
    await all_sessions_ended(server)
    assert "also, as the session ended: injected: the read failed" in caplog.text


async def test_blob_connections_cut_by_their_client_leave_no_cycles(
    server: trio_sync.Server, collector_off: None
) -> None:
    # What was tried: three blob connections, welcomed, whose clients vanish without a
    # closing handshake (the TCP connection closed under the WebSocket).
    for index in range(3):
        async with raw_websocket(server.url) as ws:
            await ws.send_message(encode(BlobHello(PROTOCOL_VERSION, f"cut-{index}", None)))
            assert isinstance(await receive(ws), BlobWelcome)
            await ws._stream.aclose()
    # Blob sessions are not tracked by the hub: look until none is left, alive or not.
    with trio.fail_after(WAIT):
        while True:
            in_cycles = cyclic_garbage_of(BlobSession)
            alive = sum(isinstance(thing, BlobSession) for thing in gc.get_objects())
            if in_cycles or not alive:
                break
            await trio.sleep(0.01)
    assert in_cycles == 0
