"""Nothing a client sends can crash the server or poison its log.

One table: every frame the hardening issue found harmful, and every malformed shape
docs/protocol.md describes, each with the answer it must get. After each, the server is
still up, a normal client still syncs, and the log reads back whole.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import attrs
import pytest
import trio

import trio_sync
from trio_sync.files._chunks import make_chunk
from trio_sync.protocol import (
    Error,
    Event,
    Pong,
    Push,
    PushRejected,
    Welcome,
    encode,
    encode_frame,
)
from trio_sync.server import ServerLimits, ServerSession

from ..conftest import WAIT, ClientFactory, ServerFactory, wait_converged
from ._raw import (
    assert_log_reads_back,
    hello,
    http_get,
    raw_frames,
    raw_websocket,
    receive,
    say_hello,
)

CHUNK_FRAME = encode_frame(make_chunk("ab" * 32, 0, b"bytes"))
EVENT = {"name": "a", "args": {}, "client_id": "raw", "client_seq": 1, "seq": None}
HELLO = json.loads(encode(hello()))


def frame(**body: object) -> str:
    return json.dumps(body)


def push(*events: dict[str, object], parent: int = 0) -> str:
    return frame(type="push", push_id=1, parent=parent, events=list(events))


def with_args(args: object) -> str:
    return push({**EVENT, "args": args})


def deep(levels: int) -> str:
    return with_args({"d": 1}).replace('"d": 1', '"d": ' + "[" * levels + "1" + "]" * levels)


@attrs.frozen
class Row:
    what: str
    frame: str | bytes
    #: Words the answer must contain (an error, unless ``answer`` says otherwise).
    words: str
    #: The kind of answer: Error (and the connection closes), or a reply that keeps it.
    answer: type = Error
    #: Send the frame as the first message instead of after a hello.
    first: bool = False


ROWS = [
    # Found by the probe: one frame ended the server process, or broke the store for good.
    Row(
        "a lone surrogate in the hello's client_id",
        json.dumps({**HELLO, "client_id": "\ud800"}),
        "hello.client_id: string holds a lone UTF-16 surrogate",
        first=True,
    ),
    Row("a lone surrogate in an event name", push({**EVENT, "name": "\udc00"}), "surrogate"),
    Row(
        "a lone surrogate in args",
        with_args({"x": "\ud800"}),
        "push.events[0].args.x: string holds a lone UTF-16 surrogate",
    ),
    Row("a lone surrogate in an args key", with_args({"\ud800": 1}), "surrogate"),
    Row(
        "a parent of 2**63",
        push(EVENT, parent=2**63),
        "push.parent: integer 9223372036854775808 is outside the signed 64-bit range",
    ),
    Row(
        "a client_seq of 2**63",
        push({**EVENT, "client_seq": 2**63}),
        "is outside the signed 64-bit range",
    ),
    Row(
        "a client_seq of 2**64",
        push({**EVENT, "client_seq": 2**64}),
        "is outside the signed 64-bit range",
    ),
    Row(
        "an integer of 5000 digits",
        frame(type="ping", nonce=0).replace("0", "9" * 5000),
        "an integer literal has too many digits",
    ),
    Row("NaN in args", with_args({"x": math.nan}), "args.x: float nan is not finite"),
    Row("Infinity in args", with_args({"x": math.inf}), "args.x: float inf is not finite"),
    Row("-Infinity in args", with_args({"x": [-math.inf]}), "args.x[0]: float -inf"),
    Row("args nested 900 deep", deep(900), "nested deeper than 32 levels"),
    Row("args nested 5000 deep", deep(5000), "too deeply"),
    Row(
        "a client id of 10,000 characters",
        json.dumps({**HELLO, "client_id": "x" * 10_000}),
        "client_id is longer than 128 characters",
        first=True,
    ),
    Row(
        "a client id with a newline",
        json.dumps({**HELLO, "client_id": "a\nb"}),
        "control character",
        first=True,
    ),
    Row(
        "a pull cursor of 10**30",
        frame(type="pull", pull_id=1, cursor=10**30),
        "pull.cursor: integer 1000000000000000000000000000000 is outside the signed 64-bit range",
    ),
    Row(
        "a pull cursor beyond the head",
        frame(type="pull", pull_id=1, cursor=5),
        "pull cursor 5 is beyond the head 0",
    ),
    Row(
        "a token of 5000 characters",
        json.dumps({**HELLO, "token": "t" * 5000}),
        "token is longer than 4096",
        first=True,
    ),
    # Malformed shapes (docs/protocol.md).
    Row("not JSON", "{{{{", "frame is not valid JSON"),
    Row("a binary frame", b"\x00\x01binary", "a binary frame must be a blob chunk"),
    Row("a blob chunk on a sync connection", CHUNK_FRAME, "a client does not send 'blob_chunk'"),
    Row("a blob chunk instead of a hello", CHUNK_FRAME, "expected 'hello' first", first=True),
    Row("a chunk frame shorter than its header", CHUNK_FRAME[:50], "shorter than its 73-byte"),
    Row("an empty binary frame", b"", "got tag none"),
    Row("a JSON array", "[1, 2]", "frame must be a JSON object, got list"),
    Row("a JSON string", '"hello"', "frame must be a JSON object, got str"),
    Row("no type", frame(nonce=1), "message has no 'type' field"),
    Row("an unknown type", frame(type="admin"), "unknown message type 'admin'"),
    Row("a field missing", frame(type="ping"), "required field missing @ ping.nonce"),
    Row("an unknown field", frame(type="ping", nonce=1, admin=True), "extra fields found"),
    Row("an int given as a string", frame(type="ping", nonce="1"), "expected int, got str"),
    Row("an int given as a bool", frame(type="ping", nonce=True), "expected int, got bool"),
    Row("an int given as a float", frame(type="ping", nonce=1.0), "expected int, got float"),
    Row("a negative cursor", frame(type="pull", pull_id=1, cursor=-1), "non-negative"),
    Row("an empty push", push(), "a push carries at least one event"),
    Row("args that are a list", with_args([1]), "expected a JSON object, got list"),
    Row("a pushed event with a seq", push({**EVENT, "seq": 3}), "must not carry a seq"),
    Row(
        "a push with a client_seq gap",
        push(EVENT, {**EVENT, "client_seq": 3}),
        "events are not consecutive commits of one client",
    ),
    Row(
        "an event over max_event_bytes",
        with_args({"pad": "x" * (1024 * 1024)}),
        "exceeds the limit max_event_bytes=1048576",
    ),
    Row(
        "a push over max_push_events",
        push(*({**EVENT, "client_seq": i} for i in range(1, 1002))),
        "push of 1001 events exceeds the limit max_push_events=1000",
    ),
    Row("a push before the hello", push(EVENT), "expected 'hello' first, got 'push'", first=True),
    Row("a second hello", encode(hello()), "a client does not send 'hello'"),
    Row("a server's message", frame(type="pong", nonce=1, head=0), "a client does not send 'pong'"),
    Row(
        "another protocol version",
        json.dumps({**HELLO, "protocol_version": 99}),
        "protocol version 99 is not supported",
        first=True,
    ),
    # Answered without closing: the batch is refused, the connection is fine.
    Row(
        "another client's events",
        push({**EVENT, "client_id": "someone-else"}),
        "belongs to another client than 'raw'",
        answer=PushRejected,
    ),
    Row("duplicate keys (the last one counts)", '{"type":"ping","nonce":1,"nonce":2}', "2", Pong),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.what for row in ROWS])
async def test_a_bad_frame_gets_its_answer_and_harms_nothing(
    row: Row, server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    async with raw_websocket(server.url) as ws:
        if not row.first:
            assert isinstance(await say_hello(ws), Welcome)
        await ws.send_message(row.frame)
        reply = await receive(ws)
        assert isinstance(reply, row.answer), reply
        if isinstance(reply, Error):
            assert row.words in reply.reason, reply.reason
        elif isinstance(reply, PushRejected):
            assert row.words in reply.reason and not reply.retryable
        else:
            assert isinstance(reply, Pong) and reply.nonce == int(row.words)
    await _the_server_still_serves(server, open_test_client, tmp_path)


async def _the_server_still_serves(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    async with open_test_client(server.url, "normal") as client:
        await client.commit("still", {"works": True})
        await wait_converged(client)
        assert [e.name for e in client.confirmed_events()] == ["still"]
    assert assert_log_reads_back(tmp_path / "server.sqlite3") == 1


async def test_a_frame_over_the_size_limit_closes_that_connection(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    async with raw_frames(server.url) as ws:
        # What was tried: a 5 MiB text frame (the limit is 4 MiB). It is refused as it
        # arrives: close code 1009, or a reset if the server closes while we still send.
        try:
            await ws.send_frame(0x1, b'{"type":"ping","nonce":0,"pad":"' + b"x" * (5 * 2**20))
        except trio.BrokenResourceError:
            pass
        else:
            assert await ws.close_code() in (1009, None)
    await _the_server_still_serves(server, open_test_client, tmp_path)


async def test_invalid_utf8_in_a_text_frame_closes_that_connection(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    async with raw_frames(server.url) as ws:
        await ws.send_frame(0x1, b'{"type":"hello","client_id":"\xff\xfe"}')
        # wsproto finds it (1007); trio-websocket then closes the TCP stream without
        # sending the close frame, so the code may not reach us.
        assert await ws.close_code() in (1007, None)
    await _the_server_still_serves(server, open_test_client, tmp_path)


async def test_an_unexpected_error_costs_one_connection_and_is_logged(
    server: trio_sync.Server,
    open_test_client: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: ServerSession, push: Push, log: object) -> None:
        raise RuntimeError("a bug in the server")

    with monkeypatch.context() as patch:
        patch.setattr(ServerSession, "_answer_push", broken)
        async with raw_websocket(server.url) as ws:
            assert isinstance(await say_hello(ws), Welcome)
            await ws.send_message(encode(Push(1, 0, (Event("x", {}, "raw", 1),))))
            reply = await receive(ws)
            assert isinstance(reply, Error) and reply.reason == "internal server error"
    assert any(
        record.exc_info and "a bug in the server" in str(record.exc_info[1])
        for record in caplog.records
    ), "the traceback is logged"
    await _the_server_still_serves(server, open_test_client, tmp_path)


async def test_nobody_can_forge_a_log_line(
    server: trio_sync.Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sync")
    forged = "\n2026-01-01 00:00:00 INFO trio_sync.server: client 'admin' authorized"
    async with raw_websocket(server.url) as ws:
        assert isinstance(await say_hello(ws), Welcome)
        await ws.send_message(with_args({forged: float("nan")}))
        assert isinstance(await receive(ws), Error)
    lines = [r.getMessage() for r in caplog.records if "invalid message" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)
    assert "\\n2026-01-01" in lines[0]  # shown escaped


async def test_a_flood_of_pings_is_slowed_not_served_at_once(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # What was tried: 20,000 pipelined pings, never reading the pongs. The server reads no
    # faster than its rate limit and stops reading while its answers pile up unread;
    # meanwhile a normal client syncs as usual.
    async with raw_websocket(server.url) as ws:
        assert isinstance(await say_hello(ws), Welcome)
        with trio.move_on_after(2):
            for nonce in range(20_000):
                await ws.send_message(encode_ping(nonce))
        await _the_server_still_serves(server, open_test_client, tmp_path)


def encode_ping(nonce: int) -> str:
    return f'{{"type":"ping","nonce":{nonce}}}'


BAD_UPGRADES = [
    # Found by the probe: each took a connection slot for ever (the handshake waited
    # outside any deadline); 10,000 of them locked every client out.
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: notupgrade\r\n\r\n",
]


async def test_refused_upgrade_requests_give_their_connection_slot_back(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(limits=ServerLimits(max_connections=3))
    host, port = server.host, server.port
    for round_ in range(3):
        for request in BAD_UPGRADES:
            with trio.fail_after(WAIT):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    await stream.send_all(request)
                    answer = await stream.receive_some()
            assert answer.split()[1] in (b"400", b"404", b"426"), (round_, answer)
    assert (await http_get(server.url, "/healthz"))[0] == 200
    async with open_test_client(server.url, "A") as client:
        await client.commit("x", {})
        await wait_converged(client)


async def test_before_its_hello_a_connection_may_send_only_a_small_frame(
    server: trio_sync.Server, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    # Found by the probe: 8 unauthenticated 64 MiB frames took the server to 1.1 GB.
    async with raw_frames(server.url) as ws:
        try:
            await ws.send_frame(0x1, b'{"type":"hello","pad":"' + b"x" * (2 * 2**20) + b'"}')
        except trio.BrokenResourceError:
            pass
        else:
            assert await ws.close_code() in (1009, None)
    await _the_server_still_serves(server, open_test_client, tmp_path)
