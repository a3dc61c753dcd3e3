"""Fuzz: thousands of frames drawn by Hypothesis, sent by an independent WebSocket client
(``websockets``) to a real ``trio-sync serve`` process. Afterwards the process is up, a
normal client syncs, and the log passes SQLite's integrity check and reads back whole."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

import trio_sync

from ..conftest import FAST, WAIT
from ..test_cli import CLI
from ._raw import assert_log_reads_back

EXAMPLES = 600

#: Text with everything JSON can escape, lone surrogates and control characters included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 3, max_value=2**64 + 3)
    | st.integers(min_value=-(2**64), max_value=-(2**63) + 3)
    | st.floats(allow_nan=True, allow_infinity=True)
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "hello": [
        "protocol_version",
        "client_id",
        "schema_name",
        "schema_version",
        "server_id",
        "cursor",
        "token",
    ],
    "push": ["push_id", "parent", "events"],
    "pull": ["pull_id", "cursor"],
    "ping": ["nonce"],
    "error": ["reason", "fatal"],
    "welcome": ["protocol_version", "server_id", "head", "store_id", "limits"],
}
event_like = st.fixed_dictionaries(
    {
        "name": any_text | st.just("fuzz.event"),
        "args": json_values | st.dictionaries(any_text, json_values, max_size=4),
        "client_id": any_text | st.just("fuzz"),
        "client_seq": numbers | st.just(1),
        "seq": st.none() | numbers,
    }
)
message_like = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda kind: st.fixed_dictionaries(
        {"type": st.just(kind)},
        optional={
            field: json_values | st.lists(event_like, max_size=3) | st.just(1)
            for field in FIELDS[kind]
        },
    )
)


def _duplicate_a_key(text: str) -> str:
    return text.replace("{", '{"type":"ping","nonce":0,', 1) if text.startswith("{") else text


frames = (
    message_like.map(json.dumps)
    | message_like.map(json.dumps).map(_duplicate_a_key)
    | st.dictionaries(any_text, json_values, max_size=3).map(json.dumps)
    | json_values.map(json.dumps)
    | st.integers(min_value=1, max_value=3000).map(lambda depth: "[" * depth + "]" * depth)
    | any_text
    | st.binary(max_size=64)
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    db = tmp_path_factory.mktemp("fuzz") / "server.sqlite3"
    with open(db.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(
            [*CLI, "serve", "--db", str(db), "--create-stores"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    url = proc.stdout.readline().split(" at ")[1].strip()
    yield proc, url, db
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT)
    proc.stdout.close()


HELLO = json.dumps(
    {
        "type": "hello",
        "protocol_version": trio_sync.protocol.PROTOCOL_VERSION,
        "client_id": "fuzz",
        "schema_name": "default",
        "schema_version": 1,
        "server_id": None,
        "cursor": 0,
    }
)
PING = '{"type":"ping","nonce":424242}'


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(after_hello=st.booleans(), sent=st.lists(frames, min_size=1, max_size=8))
def test_fuzzed_frames_never_hurt_the_server(
    server: tuple[subprocess.Popen[str], str, Path], after_hello: bool, sent: list[str | bytes]
) -> None:
    proc, url, _ = server
    try:
        with connect(url, open_timeout=WAIT, close_timeout=1, max_size=None) as ws:
            if after_hello:
                ws.send(HELLO)
            for frame in sent:
                ws.send(frame)
            # Answered in order: our ping's pong means every frame before it was handled
            # (unless the server refused one and closed, which is as good).
            ws.send(PING)
            while True:
                reply = json.loads(ws.recv(timeout=WAIT))
                if reply.get("type") == "error" or reply.get("nonce") == 424242:
                    break
    except (ConnectionClosed, InvalidMessage, OSError):
        pass
    assert proc.poll() is None, "the server process ended"


def test_after_the_fuzz_a_client_syncs_and_the_log_reads_back(
    server: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    proc, url, db = server

    async def sync_once() -> None:
        async with trio_sync.open_client(
            url, str(tmp_path / "normal.sqlite3"), client_id="normal", timings=FAST
        ) as client:
            await client.commit("after.fuzz", {"ok": True, "pi": math.pi})
            with trio.fail_after(WAIT):
                await client.wait_synced()

    trio.run(sync_once)
    assert proc.poll() is None
    assert assert_log_reads_back(db) >= 1
