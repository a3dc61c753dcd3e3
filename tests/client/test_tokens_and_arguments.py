"""A token function that fails is a connection failure like any other, not the end of
the application's block; arguments that could never work are refused at open_client."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest
import trio

import trio_sync
from trio_sync.protocol import issue_token

from ..conftest import FAST, WAIT, ClientFactory, ServerFactory

SECRET = b"a-long-enough-server-secret-0123456789"


def valid_token() -> str:
    return issue_token(SECRET, store_id="default", client_id="A", expires_at=time.time() + 3600)


async def test_a_failing_token_function_is_a_failed_connection_that_heals(
    open_server: ServerFactory, open_test_client: ClientFactory
) -> None:
    # What was tried: a token function that raises (the token service is down). It used to
    # end the open_client block with its exception, whatever the application was doing.
    server = await open_server(auth_secrets=[SECRET])
    service_up = False

    def fetch_token() -> str:
        if not service_up:
            raise RuntimeError("token service down")
        return valid_token()

    async with open_test_client(server.url, "A", token=fetch_token) as client:
        await client.commit("mine", {})
        with trio.fail_after(WAIT):
            status = await client.wait_status(
                lambda s: "token service down" in (s.last_error or "")
            )
        assert status.state in ("disconnected", "stuck")
        assert "the token function raised RuntimeError('token service down')" in (
            status.last_error or ""
        )
        service_up = True
        client.retry()
        with trio.fail_after(WAIT):
            await client.wait_synced()
        assert [e.name for e in client.confirmed_events()] == ["mine"]


async def async_token_that_hangs() -> str:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (lambda: 12345, "what the token function returned is int 12345, not a token string"),
        (lambda: "", "what the token function returned is an empty string, not a token"),
        (lambda: "t" * 5000, "is 5000 characters long; a token has at most 4096"),
        (async_token_that_hangs, "the token function did not return within 0.2s"),
    ],
    ids=["an int", "empty", "too long", "hangs"],
)
async def test_a_token_function_that_gives_no_token_is_reported(
    open_server: ServerFactory, open_test_client: ClientFactory, token: object, words: str
) -> None:
    # What was tried: token functions returning an int, an empty string, a token too long
    # for a hello, and one that never returns. The int and the long one used to end the
    # block (a TypeError, a ValueError from a background task); the hang kept the client
    # "connecting" for ever, with no error to show.
    server = await open_server(auth_secrets=[SECRET])
    timings = attrs.evolve(FAST, connect_timeout=0.2)
    async with open_test_client(server.url, "A", token=token, timings=timings) as client:
        with trio.fail_after(WAIT):
            status = await client.wait_status(lambda s: words in (s.last_error or ""))
        assert not status.connected


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"token": 5}, TypeError, "token must be a string or a function returning one, not int"),
        ({"token": ""}, ValueError, "the token given is an empty string"),
        ({"token": "t" * 4097}, ValueError, "is 4097 characters long; a token has at most 4096"),
        ({"push_batch_size": 1.5}, ValueError, "push batch_size must be an int of at least 1"),
        ({"push_batch_size": True}, ValueError, "push batch_size must be an int of at least 1"),
        ({"push_batch_size": 0}, ValueError, "push batch_size must be an int of at least 1"),
    ],
    ids=["token 5", "empty token", "long token", "batch 1.5", "batch True", "batch 0"],
)
async def test_arguments_that_could_never_work_are_refused_at_open(
    tmp_path: Path, options: dict[str, object], error: type[Exception], words: str
) -> None:
    # What was tried: each was accepted, and ended the block later from a background task
    # (at the first push or the first connection).
    with pytest.raises(error, match=words):
        async with trio_sync.open_client("ws://127.0.0.1:1", tmp_path / "a.sqlite3", **options):
            raise AssertionError("opened")  # pragma: no cover
    assert not (tmp_path / "a.sqlite3").exists()  # refused before the store was made


async def test_a_store_path_may_be_a_path_object(server: trio_sync.Server, tmp_path: Path) -> None:
    # What was tried: a pathlib.Path, as the rest of Python takes (it raised AttributeError).
    async with trio_sync.open_client(server.url, tmp_path / "a.sqlite3", timings=FAST) as client:
        await client.commit("x", {})
        with trio.fail_after(WAIT):
            await client.wait_synced()
    assert (tmp_path / "a.sqlite3").is_file()


@pytest.mark.parametrize(
    ("url", "words"),
    [(None, "not NoneType"), (b"ws://127.0.0.1:1", "not bytes"), (5, "not int")],
    ids=["None", "bytes", "int"],
)
async def test_a_url_of_the_wrong_type_is_an_invalid_url(
    tmp_path: Path, url: object, words: str
) -> None:
    # What was tried: None (a bare "'NoneType' object is not iterable"), bytes (each byte
    # taken as a URL: "not 119"), an int.
    with pytest.raises(trio_sync.InvalidURL, match=f"a server URL is a string.*{words}"):
        async with trio_sync.open_client(url, tmp_path / "a.sqlite3"):  # type: ignore[arg-type]
            raise AssertionError("opened")  # pragma: no cover
