"""Who gets in where: stores are separate logs, and with tokens nobody reads or writes a
store, or acts as a client, without a token that says so."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from trio_sync import InvalidURL
from trio_sync.protocol import Error, Message, Welcome, encode, issue_token
from trio_sync.server import ServerLimits

from .._virtual import World
from ..conftest import WAIT, ClientFactory, ServerFactory, wait_converged
from ._raw import hello as raw_hello
from ._raw import raw_websocket, receive

SECRET = b"a-long-enough-server-secret-0123456789"
ROTATED = b"the-previous-server-secret-9876543210"


def token(
    store: str = "default", client: str = "A", ttl: float = 3600, secret: bytes = SECRET
) -> str:
    return issue_token(secret, store_id=store, client_id=client, expires_at=time.time() + ttl)


def stored_events(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT store_id, client_id FROM log ORDER BY store_id, seq").fetchall()
    finally:
        conn.close()


async def test_stores_are_separate_logs(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    server = await open_server(create_stores=True)
    async with (
        open_test_client(server.url + "/todo", "A") as a,
        open_test_client(server.url + "/todo", "B") as b,
        open_test_client(server.url + "/notes", "C") as c,
        open_test_client(server.url, "D") as d,
    ):
        for client in (a, b, c, d):
            await client.commit("note", {"by": client.client_id})
        await wait_converged(a, b)
        await wait_converged(c)
        await wait_converged(d)
        assert {e.client_id for e in a.confirmed_events()} == {"A", "B"}
        assert b.confirmed_events() == a.confirmed_events()
        assert [e.client_id for e in c.confirmed_events()] == ["C"]
        assert [e.client_id for e in d.confirmed_events()] == ["D"]
        # Each store numbers its own log, and has its own identity.
        assert c.confirmed_events()[0].seq == d.confirmed_events()[0].seq == 1
    assert sorted(stored_events(tmp_path / "server.sqlite3")) == [
        ("default", "D"),
        ("notes", "C"),
        ("todo", "A"),
        ("todo", "B"),
    ]


async def test_the_bare_url_and_slash_default_are_the_same_store(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server()
    async with (
        open_test_client(server.url, "A") as a,
        open_test_client(server.url + "/default", "B") as b,
    ):
        await a.commit("x", {})
        await b.commit("y", {})
        await wait_converged(a, b)
        assert len(a.confirmed_events()) == 2


async def test_an_unknown_store_is_refused_and_nothing_is_lost(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path
) -> None:
    server = await open_server()
    async with open_test_client(server.url + "/nope", "A") as client:
        await client.commit("kept", {"i": 1})
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: s.state == "incompatible")
        assert "store 'nope' does not exist on this server" in (status.last_error or "")
        assert [e.name for e in client.pending_events()] == ["kept"]
    assert stored_events(tmp_path / "server.sqlite3") == []


@pytest.mark.parametrize("path", ["/a/b", "/.hidden"])
async def test_a_path_that_names_no_store_is_refused_by_both_ends(
    open_server: ServerFactory, open_test_client: ClientFactory, tmp_path: Path, path: str
) -> None:
    server = await open_server()
    # Our client refuses it before anything is opened...
    with pytest.raises(InvalidURL, match="names no store"):
        async with open_test_client(server.url + path, "A"):
            pass  # pragma: no cover
    # ...and the server refuses another client that sends it anyway.
    async with raw_websocket(server.url + path) as ws:
        await ws.send_message(encode(raw_hello("raw")))
        farewell = await receive(ws)
    assert isinstance(farewell, Error) and farewell.fatal
    assert f"no store at path {path!r}" in farewell.reason
    assert stored_events(tmp_path / "server.sqlite3") == []


async def test_an_unknown_store_is_created_on_first_use_when_allowed(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(create_stores=True)
    async with open_test_client(server.url + "/fresh", "A") as client:
        await client.commit("x", {})
        await wait_converged(client)


# --- tokens -----------------------------------------------------------------------------


BAD_TOKENS = [
    ("no token", lambda: None, "this server requires a token"),
    ("garbage", lambda: "not-a-token", "the token is malformed"),
    ("another server's secret", lambda: token(secret=b"x" * 32), "not signed by this server"),
    ("expired", lambda: token(ttl=-1), "the token expired at"),
    ("another store", lambda: token(store="other"), "the token is for store 'other'"),
    # The probe's hijack: saying hello with someone else's id. Now the token pins the id.
    ("another client's id", lambda: token(client="mallory"), "for client 'mallory', not 'A'"),
]


@pytest.mark.parametrize(("what", "make", "words"), BAD_TOKENS, ids=[b[0] for b in BAD_TOKENS])
async def test_a_client_without_a_valid_token_reads_and_writes_nothing(
    open_server: ServerFactory,
    open_test_client: ClientFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    what: str,
    make: Callable[[], str | None],
    words: str,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sync")
    server = await open_server(auth_secrets=[SECRET])
    async with open_test_client(server.url, "B", token=token(client="B")) as insider:
        await insider.commit("secret", {"x": 1})
        await wait_converged(insider)
    bad = make()
    async with open_test_client(server.url, "A", token=bad) as client:
        await client.commit("mine", {})
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: s.state == "incompatible")
        assert status.last_error is not None and words in status.last_error
        assert "not authorized" in status.last_error
        assert client.confirmed_events() == []  # nothing read
        assert [e.name for e in client.pending_events()] == ["mine"]  # nothing lost
    assert stored_events(tmp_path / "server.sqlite3") == [("default", "B")]  # nothing written
    if bad:
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "not authorized" in logged and bad not in logged  # refused, token not shown


async def test_a_valid_token_syncs_and_a_rotated_secret_still_verifies(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(auth_secrets=[SECRET, ROTATED], create_stores=True)
    calls: list[int] = []

    def fresh_token() -> str:  # a function: called at each connection, may renew
        calls.append(1)
        return token(store="todo", client="B", secret=ROTATED)

    async with (
        open_test_client(server.url + "/todo", "A", token=token(store="todo")) as a,
        open_test_client(server.url + "/todo", "B", token=fresh_token) as b,
    ):
        await a.commit("x", {})
        await b.commit("y", {})
        await wait_converged(a, b)
    assert calls


async def test_a_connection_ends_when_its_token_expires(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(auth_secrets=[SECRET])
    async with world.network.connect(world.url, client_id="A") as conn:
        short = token(ttl=5)  # found by the probe: a connection outlived its token
        await conn.send(attrs.evolve(raw_hello("A"), token=short))
        assert isinstance(await conn.receive(), Welcome)
        farewell = await conn.receive()
        assert isinstance(farewell, Error) and farewell.fatal
        assert farewell.reason.startswith("not authorized: the token expired at")
        # Its 5 seconds, and less than one more (expiries are whole seconds, rounded up).
        assert 5.0 <= trio.current_time() <= 6.0


async def test_reloaded_secrets_apply_to_new_connections(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    server = await open_server(auth_secrets=[SECRET])
    new = b"a-brand-new-secret-after-rotation-0000"
    server.reload_auth_secrets([new, SECRET])
    async with open_test_client(server.url, "A", token=token(secret=new)) as a:
        await a.commit("x", {})
        await wait_converged(a)
    server.reload_auth_secrets([new])  # the old secret retired
    async with open_test_client(server.url, "B", token=token(client="B")) as b:
        status = await b.wait_status(lambda s: s.state == "incompatible")
        assert "not signed by this server's secret" in (status.last_error or "")
    with pytest.raises(ValueError, match="only by a restart"):
        server.reload_auth_secrets([])


async def test_without_a_token_not_even_the_schema_is_told(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.start_server(auth_secrets=[SECRET], schema_name="secret-app", schema_version=7)
    async with world.network.connect(world.url, client_id="A") as conn:
        await conn.send(raw_hello("A"))  # the wrong schema, and no token
        refusal = await conn.receive()
        assert isinstance(refusal, Error) and "requires a token" in refusal.reason
        assert "secret-app" not in refusal.reason


async def test_connections_asking_for_new_stores_at_once_never_pass_max_stores(
    open_server: ServerFactory,
) -> None:
    # What was tried: 8 connections at once, each to a store that does not exist yet, on
    # a server that may hold 3 stores (the default one among them). Each counted the
    # stores before any of them had created its own.
    server = await open_server(create_stores=True, limits=ServerLimits(max_stores=3))
    answers: dict[str, Message] = {}

    async def connect(index: int) -> None:
        async with raw_websocket(f"{server.url}/new{index}") as ws:
            await ws.send_message(encode(raw_hello(f"c{index}")))
            answers[f"new{index}"] = await receive(ws)

    async with trio.open_nursery() as nursery:
        for index in range(8):
            nursery.start_soon(connect, index)
    welcomed = sorted(store for store, answer in answers.items() if isinstance(answer, Welcome))
    refused = [answer for answer in answers.values() if isinstance(answer, Error)]
    assert len(welcomed) == 2 and len(refused) == 6
    assert all("(max_stores)" in answer.reason for answer in refused)
    assert [info.store_id for info in server._control.hub.db.stores()] == ["default", *welcomed]
