"""The command line and the README, run as a user would: real processes, real signals."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trio_sync

from .conftest import WAIT, ClientFactory

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "trio_sync.cli"]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Embedding it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README lost its embedding example"
    return match.group(1)


def test_readme_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].endswith("trio-sync demo")
    assert block[1].endswith("python -m pytest")


def test_readme_embedding_example_runs_as_written() -> None:
    code = readme_example()
    assert 15 <= len(code.splitlines()) <= 40
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "synced 0 2"
    assert "2 B bread" in result.stdout


def test_demo_ends_with_identical_logs() -> None:
    result = subprocess.run(
        [*CLI, "demo", "--events", "15"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "all logs identical" in out
    digests = re.findall(r"30 events \((?:15|0) own\), log digest ([0-9a-f]{16})", out)
    assert len(digests) == 3 and len(set(digests)) == 1
    assert "carol caught up with 30 events" in out
    assert re.search(r"alice +synced +head +30/30 +pending +0", out)
    assert re.search(r"bob +synced +head +30/30 +pending +0", out)


async def start_serve(*args: str) -> tuple[trio.Process, str]:
    """Starts ``trio-sync serve`` and returns it with the line it prints once ready. Its log
    (stderr) goes to a file beside the database (a pipe nobody reads would fill and block
    a busy server)."""
    db = Path(args[args.index("--db") + 1]) if "--db" in args else Path(".")
    with open(db.with_name(db.name + ".log"), "ab") as log:  # noqa: ASYNC230 (at start-up)
        proc = await trio.lowlevel.open_process(
            [*CLI, "serve", *args], stdout=subprocess.PIPE, stderr=log
        )
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(WAIT):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                break
            line += chunk
    return proc, line.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_prints_its_url_when_ready_and_stops_cleanly_on_a_signal(
    tmp_path: Path, open_test_client: ClientFactory, signum: signal.Signals
) -> None:
    db = tmp_path / "server.sqlite3"
    proc, line = await start_serve("--db", str(db), "--port", "0")
    try:
        match = re.fullmatch(r"trio-sync serving (.+) at (ws://127\.0\.0\.1:\d+)\n", line)
        assert match and match.group(1) == str(db), line
        async with open_test_client(match.group(2), "A") as client:
            await client.commit("over.the.cli", {"ok": True})
            with trio.fail_after(WAIT):
                await client.wait_synced()
        proc.send_signal(signum)
        with trio.fail_after(WAIT):
            assert await proc.wait() == 0
    finally:
        proc.kill()
    assert proc.stdout is not None
    rest = await proc.stdout.receive_some(4096)
    assert f"{signum.name}, shutting down" in rest.decode()
    # The log is on disk and the database closed cleanly: a new server opens it.
    async with trio.open_nursery() as nursery:
        server: trio_sync.Server = await nursery.start(trio_sync.serve, str(db))
        async with open_test_client(server.url, "B") as other:
            with trio.fail_after(WAIT):
                await other.wait_synced()
            assert [e.name for e in other.confirmed_events()] == ["over.the.cli"]
        nursery.cancel_scope.cancel()


def test_serve_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "--db", str(tmp_path / "s.sqlite3"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_corrupt_database_says_so_and_leaves_it_alone(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    db.write_bytes(b"garbage" * 1000)
    result = subprocess.run(
        [*CLI, "serve", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "damaged or not a trio_sync store" in result.stderr
    assert db.read_bytes() == b"garbage" * 1000


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("demo --events -5", "argument --events: -5 is negative"),
        ("demo --events 0", "argument --events: 0 is not at least 1"),
        ("demo --events many", "argument --events: 'many' is not a whole number"),
        ("serve --port 99999", "argument --port: 99999 is not a port"),
        ("serve --db x --max-store-bytes 10GB", "argument --max-store-bytes: '10GB' is not a size"),
        ("serve --db x --max-store-bytes -1", "argument --max-store-bytes: '-1' is not a size"),
        ("bench stall --jobs -1", "argument --jobs: -1 is negative"),
        ("bench stall --scenarios -3", "argument --scenarios: -3 is negative"),
        ("bench stall --plot /no/such/dir/x.png", "folder '/no/such/dir' does not exist"),
        ("replay --seed 0 --param clients=0", "clients must be 1 to 26, got 0"),
        ("replay --seed 0 --param clients='x'", "clients must be a whole number"),
        ("replay --seed 0 --param ack_loss=2", "ack_loss is a probability (0 to 1)"),
        ("replay --seed 0 --param nosuch=1", "unknown scenario parameters: ['nosuch']"),
        ("replay --seed 0 --max-runs 0", "argument --max-runs: 0 is not at least 1"),
        ("status", "the following arguments are required: --store"),
        # A review's findings: both were taken, then every upload failed / the token was
        # refused as expired.
        (
            "serve --db x --blob-dir /dev/null",
            "argument --blob-dir: '/dev/null' exists and is not a folder",
        ),
        (
            "serve --db x --blob-dir /dev/null/blobs",
            "argument --blob-dir: '/dev/null/blobs' cannot be made: '/dev/null' is not a folder",
        ),
        (
            "token --secret-file s --store a --client b --ttl 0",
            "argument --ttl: 0 seconds: tokens count whole seconds",
        ),
        (
            "token --secret-file s --store a --client b --ttl 0.5",
            "argument --ttl: 0.5 seconds: tokens count whole seconds",
        ),
    ],
)
def test_every_bad_input_is_refused_up_front_with_exit_2(command: str, says: str) -> None:
    result = subprocess.run([*CLI, *command.split()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_blob_folder_under_a_broken_symbolic_link(tmp_path: Path) -> None:
    # Tried (a third review's finding): --blob-dir below a link to nowhere. The server
    # started, and every upload failed ("File exists").
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    blobs = tmp_path / "broken" / "blobs"
    result = subprocess.run(
        [*CLI, "serve", "--db", str(tmp_path / "s.sqlite3"), "--blob-dir", str(blobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"{str(tmp_path / 'broken')!r} is a broken symbolic link" in result.stderr


def test_serve_refuses_a_default_blob_folder_that_is_a_file_at_start(
    tmp_path: Path,
) -> None:
    # Tried (a second review's finding): <db>.blobs, where file contents go by default, is
    # a regular file. The server started, and every upload then failed.
    db = tmp_path / "s.sqlite3"
    (tmp_path / "s.sqlite3.blobs").write_text("not a folder")
    result = subprocess.run(
        [*CLI, "serve", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"trio-sync serve: file contents cannot be kept there: {str(db) + '.blobs'!r} "
        "exists and is not a folder\n"
    )


def test_version_and_python_dash_m() -> None:
    for command in (CLI, [sys.executable, "-m", "trio_sync"]):
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == f"trio-sync {trio_sync.__version__}"


@pytest.mark.parametrize(
    "command",
    [["replay", "--seed", "0", "--full-trace"], ["demo", "--events", "50"]],
    ids=["replay", "demo"],
)
def test_output_into_a_closed_pipe_is_quiet(command: list[str]) -> None:
    # Tried: trio-sync replay --full-trace | head -1, and the same with the demo, whose
    # output is printed by tasks in a nursery (the broken pipe came wrapped in an
    # exception group: a review found an 81-line traceback and exit code 1).
    replay = subprocess.Popen(
        [*CLI, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert replay.stdout is not None and replay.stderr is not None
    with replay.stdout, replay.stderr:
        replay.stdout.readline()
        replay.stdout.close()  # what head does after its line
        stderr = replay.stderr.read().decode()
        assert replay.wait(timeout=60) == 0
    assert stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_to_a_full_disk_is_one_line_not_a_traceback() -> None:
    # Tried: trio-sync replay --seed 0 > /dev/full (every write fails with ENOSPC).
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*CLI, "replay", "--seed", "0"], stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert result.returncode == 1
    assert result.stderr == "trio-sync replay: [Errno 28] No space left on device\n"


def test_ctrl_c_in_the_demo_exits_quietly_with_130() -> None:
    demo = subprocess.Popen(
        [*CLI, "demo", "--events", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    with demo:
        demo.stdout.readline()  # the server is up: the clients are committing
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 130
    assert stderr == ""


def test_ctrl_c_in_the_demo_interrupts_no_task_in_the_middle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C cancels the demo: it lands in no task's code. Trio raises KeyboardInterrupt
    wherever the signal finds unprotected code, Trio's own bookkeeping included: inside a
    nursery's start_soon it left a task registered but never scheduled, whose nursery then
    waited for ever, holding the interrupt (the demo went on syncing after Ctrl-C); between
    a durable write run on the event loop and what it updates in memory, it left the two
    apart. Here the signal arrives in the server's bookkeeping of a push just written (on
    the event loop: the first durable write runs there); that code must run to its end."""
    from trio_sync.cli import main
    from trio_sync.server._hub import Hub

    count = Hub._count
    finished: list[bool] = []

    def interrupted(hub: Hub, decision: object) -> None:
        if not finished:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, right here
            finished.append(True)  # not reached if KeyboardInterrupt was raised here
        count(hub, decision)  # type: ignore[arg-type]

    monkeypatch.setattr(Hub, "_count", interrupted)
    assert main(["demo", "--events", "1000000"]) == 130
    assert finished == [True]


async def test_status_reads_a_store_in_use_without_connecting(
    server: trio_sync.Server, tmp_path: Path
) -> None:
    store = tmp_path / "c.sqlite3"
    async with trio_sync.open_client(server.url, str(store), client_id="A") as client:
        await client.commit("one", {})
        await client.files.save(b"contents", path="f")
        with trio.fail_after(WAIT):
            await client.files.wait_idle()
            await client.wait_synced()
        server_id = client._core.known_server_id
        # The application still has the store open: status reads it anyway.
        result = await trio.run_process(
            [*CLI, "status", "--store", str(store), "--json"], capture_stdout=True
        )
    facts = json.loads(result.stdout)
    assert facts["client_id"] == "A" and facts["server_id"] == server_id
    assert facts["upstream_head"] == 2 and facts["pending"] == 0
    assert facts["last_synced_at"] is not None
    assert facts["files"]["uploads"] == {"done": 1} and facts["files"]["upload_error"] is None
    table = await trio.run_process(
        [*CLI, "status", "--store", str(store)], capture_stdout=True, env={"COLUMNS": "100"}
    )
    text = table.stdout.decode()
    assert "client id" in text and "last synced" in text and " ago (" in text
    assert "file uploads" in text and "all 1 done" in text


def test_status_of_a_missing_or_foreign_file_says_so(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*CLI, "status", "--store", str(tmp_path / "none.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no client store at" in missing.stderr
    other = tmp_path / "notes.txt"
    other.write_text("hello " * 1000)
    foreign = subprocess.run(
        [*CLI, "status", "--store", str(other)], capture_output=True, text=True, timeout=60
    )
    assert foreign.returncode == 1 and "not a trio_sync store" in foreign.stderr
    assert other.read_text() == "hello " * 1000


def test_serve_tunes_the_cycle_collector_of_its_own_process_only() -> None:
    # What `trio-sync serve` runs before serving, in a process of its own: the young
    # threshold raised, start-up objects frozen out of every later scan. Importing the
    # library changes nothing.
    script = (
        "import gc, json\n"
        "before = gc.get_threshold()\n"
        "import trio_sync, trio_sync.server\n"
        "from trio_sync.server._process import YOUNG_COLLECTION_THRESHOLD\n"
        "imported = gc.get_threshold()\n"
        "trio_sync.server.tune_process()\n"
        "print(json.dumps([before, imported, gc.get_threshold(), gc.get_freeze_count(),\n"
        "                  YOUNG_COLLECTION_THRESHOLD]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    before, imported, tuned, frozen, young = json.loads(result.stdout)
    assert imported == before
    assert tuned == [young, before[1], before[2]]
    assert young > 10 * before[0]
    assert frozen > 10_000


def test_the_serve_command_tunes_its_process_before_serving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from trio_sync.cli import _serve, parser

    steps: list[str] = []
    monkeypatch.setattr(_serve, "tune_process", lambda: steps.append("tuned"))
    monkeypatch.setattr(_serve.trio, "run", lambda *args, **kwargs: steps.append("served"))
    args = parser().parse_args(["serve", "--db", str(tmp_path / "server.sqlite3")])
    assert _serve.run_serve(args) == 0
    assert steps == ["tuned", "served"]


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("--bogus", "trio-sync: error: unrecognized arguments: --bogus"),
        ("--bogus serve --db x", "trio-sync: error: unrecognized arguments: --bogus"),
        ("bench --bogus", "trio-sync bench: error: unrecognized arguments: --bogus"),
        ("", "the following arguments are required: command"),
    ],
)
def test_an_unknown_flag_is_named_before_a_missing_command(command: str, says: str) -> None:
    # Tried: trio-sync --bogus. argparse checked the required command first and said only
    # "the following arguments are required: command", never naming the flag.
    result = subprocess.run([*CLI, *command.split()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr
    if command:
        assert "are required" not in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_hints_at_port_fallback_only_for_a_taken_port(tmp_path: Path) -> None:
    # Tried: trio-sync serve --host 999.1.1.1. It said "Name or service not known
    # (port_fallback=N tries the next N ports)": a hint about ports for a bad host, and in
    # the words of the Python argument rather than the flag.
    db = str(tmp_path / "s.sqlite3")
    bad_host = subprocess.run(
        [*CLI, "serve", "--db", db, "--host", "999.1.1.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_host.returncode == 1
    assert "cannot listen on 999.1.1.1:0: " in bad_host.stderr
    assert "port_fallback" not in bad_host.stderr and "--port-fallback" not in bad_host.stderr
    assert "Traceback" not in bad_host.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = subprocess.run(
            [*CLI, "serve", "--db", db, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert in_use.returncode == 1
    assert in_use.stderr.rstrip().endswith("(--port-fallback N tries the next N ports)")
    assert "port_fallback=" not in in_use.stderr


def test_serve_says_which_tls_file_is_wrong(tmp_path: Path) -> None:
    # Tried: trio-sync serve --certfile server.pem, the file holding the certificate but
    # not its key. It said "cannot load the certificate or key: [SSL] PEM lib (_ssl.c:3926)".
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    cert, key, both = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "both.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    issued.private_key_and_cert_chain_pem.write_to_path(str(both))
    other = tmp_path / "other.pem"
    ca.issue_cert("elsewhere").private_key_pem.write_to_path(str(other))

    result = subprocess.run(
        [*CLI, "serve", "--db", str(tmp_path / "s.sqlite3"), "--certfile", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"trio-sync serve: cannot load the private key: --certfile {str(cert)!r} holds "
        "none; name the key's file with --keyfile\n"
    )
    # What loads, loads; every other mistake names its file.
    from trio_sync.cli._args import CommandError
    from trio_sync.cli._serve import tls_context

    assert tls_context(str(cert), str(key)) is not None
    assert tls_context(str(both), None) is not None
    assert tls_context(None, None) is None
    for certfile, keyfile, says in [
        (key, key, f"--certfile {str(key)!r} holds no PEM certificate"),
        (cert, cert, f"--keyfile {str(cert)!r} holds no PEM private key"),
        (cert, other, f"the private key in {str(other)!r} is not the certificate's"),
        (tmp_path / "none.pem", None, "--certfile: cannot read"),
        (cert, tmp_path / "none.pem", "--keyfile: cannot read"),
        (None, key, "--keyfile needs --certfile"),
    ]:
        with pytest.raises(CommandError, match=re.escape(says)):
            tls_context(certfile and str(certfile), keyfile and str(keyfile))
