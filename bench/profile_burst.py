"""Where a burst's time goes in the client process, by kind of work, for any version.

``python bench/profile_burst.py [--tasks 16] [--events N] [--before TREE] [--rate HZ]``

Runs the burst of ``throughput.py`` (A commits N events, one task or 16 at once, until B
holds them all; the server in a process of its own) under py-spy (``pip install
py-spy``; sampling without pausing the process, every thread), and sorts the samples by
the kind of work of the frame that was running: SQLite (and the fsync under a durable
commit), hand-offs to worker threads, Trio's scheduling, the codec, WebSocket framing,
socket calls, the engine's own logic. It prints microseconds of samples per event for
each kind, and the client's CPU and events/s measured without the profiler.

``--before TREE`` measures an older version beside this one: a folder holding its
``trio_sync`` package (``git archive <commit> | tar -x -C TREE``). The burst speaks only
the public API that every version has had (``serve``, ``open_client``, ``commit``,
``confirmed_stream``), so the issue's "before" (6aeffc8) runs as it is.

``python bench/profile_burst.py burst N TASKS URL FOLDER`` runs the burst alone through the
server at URL, its stores in FOLDER, and prints one JSON line (what the profiled child
runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

import trio_sync

#: The kinds of work, by the file or function of the frame that was running.
KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("SQLite, rows (and the commit's fsync)", re.compile(r"sqlite|trio_sync/store/")),
    ("worker-thread hand-offs", re.compile(r"_thread_cache|trio/_threads|threading\.py")),
    ("socket calls", re.compile(r"trio/_socket|trio/_highlevel_socket")),
    ("WebSocket framing", re.compile(r"wsproto/|trio_websocket/|h11/")),
    ("codec (JSON, validation)", re.compile(r"trio_sync/protocol/_(json|codec|events)|json")),
    ("Trio scheduling", re.compile(r"trio/|outcome/|contextlib")),
    ("engine logic", re.compile(r"trio_sync/")),
]
OTHER = "other (the harness, the interpreter)"
#: Where a burst child finds the pid of the process it must not outlive.
PARENT_VARIABLE = "PROFILE_BURST_PARENT"
#: Sampling without pausing the process (pauses would stretch what they interrupt), every
#: thread, stacks as text lines.
PY_SPY = ["py-spy", "record", "--nonblocking", "-f", "raw"]

SERVER = (
    "import sys, trio, trio_sync\n"
    "async def main():\n"
    "    async with trio.open_nursery() as nursery:\n"
    "        server = await nursery.start(trio_sync.serve, sys.argv[1])\n"
    "        print(server.url, flush=True)\n"
    "        await trio.to_thread.run_sync(sys.stdin.read)\n"
    "        nursery.cancel_scope.cancel()\n"
    "trio.run(main)\n"
)


class _LoopIdle(trio.abc.Instrument):
    """Seconds the event loop waited for I/O with nothing to run, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seconds = 0.0
        self._since = 0.0

    def before_io_wait(self, timeout: float) -> None:
        self._since = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        if self.on:
            self.seconds += time.perf_counter() - self._since


async def _pause(say: str) -> None:
    """Says ``say`` on stdout and waits for a line on stdin (the profiler's cue)."""
    print(say, flush=True)
    await trio.to_thread.run_sync(sys.stdin.readline)


async def _burst(
    folder: str, url: str, events: int, tasks: int, idle: _LoopIdle, paused: bool
) -> dict:
    a_path, b_path = os.path.join(folder, "a.sqlite3"), os.path.join(folder, "b.sqlite3")
    async with (
        trio_sync.open_client(url, a_path, client_id="a") as a,
        trio_sync.open_client(url, b_path, client_id="b") as b,
    ):
        await a.commit("warm-up", {})
        await a.wait_synced()
        await b.wait_synced()
        all_seen = trio.Event()
        seen = 0

        async def watch() -> None:
            nonlocal seen
            async for event in b.confirmed_stream():
                if event.name == "item":
                    seen += 1
                    if seen == events:
                        all_seen.set()
                        return

        async def commit_every(first: int) -> None:
            for i in range(first, events, tasks):
                await a.commit("item", {"i": i, "text": "x" * 40})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await b.wait_synced()
            if paused:  # the profiler attaches now: it sees the burst, not the set-up
                await _pause("ready")
            wall, cpu, idle.on = time.perf_counter(), time.process_time(), True
            async with trio.open_nursery() as committers:
                for first in range(tasks):
                    committers.start_soon(commit_every, first)
            await all_seen.wait()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            idle.on = False
            figures = {
                "events_per_second": events / wall,
                "cpu_us_per_event": cpu / events * 1e6,
                "loop_idle_us_per_event": idle.seconds / events * 1e6,
            }
            if paused:  # the profiler stops now: it does not see the tear-down
                await _pause(json.dumps(figures))
    return figures


def burst(events: int, tasks: int, url: str, folder: str, paused: bool = False) -> dict:
    """One burst through the server at ``url``; returns its figures. ``paused``: it says
    "ready" on stdout and waits for a line on stdin before the burst, and says its
    figures and waits again after it (before closing anything). The stores go to
    ``folder``, which the caller removes. It ends if the process that started it does."""
    idle = _LoopIdle()
    return trio.run(
        _orphan_watch, _burst, folder, url, events, tasks, idle, paused, instruments=[idle]
    )


async def _orphan_watch(function: Any, *args: Any) -> Any:
    """Runs ``function(*args)``, and ends this process if its parent ends first (its
    server then ends too, and clients would retry for ever). The parent is the one that
    said so in the environment: it may have ended before this process got here."""
    parent = int(os.environ.get(PARENT_VARIABLE, os.getppid()))
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            # Polled: nothing tells a process that its parent ended.
            while True:
                if os.getppid() != parent:
                    os._exit(1)
                await trio.sleep(0.5)

        nursery.start_soon(watch)
        result = await function(*args)
        nursery.cancel_scope.cancel()
    return result


def kind_of(frame: str) -> str:
    """The kind of work of one py-spy frame (``function (file:line)``)."""
    for kind, pattern in KINDS:
        if pattern.search(frame):
            return kind
    return OTHER


def summarize(raw: str) -> Counter[str]:
    """Samples per kind of work in a py-spy ``--format raw`` profile, leaving out
    importing modules (start-up, not the burst)."""
    kinds: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("importlib._bootstrap" in frame for frame in frames):
            continue
        kinds[kind_of(frames[-1])] += int(count)
    return kinds


def _child(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ, **{PARENT_VARIABLE: str(os.getpid())})
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env


def measure(tree: Path | None, events: int, tasks: int, rate: int, out: Path) -> dict:
    """The burst without the profiler (the figures), then under py-spy (the kinds).

    Raises:
        RuntimeError: A burst or py-spy failed.
    """
    env = _env(tree)
    with _serving(env) as (server, url, folder):
        burst_args = [str(events), str(tasks), url, folder]
        figures = json.loads(_run_child(_child("burst", *burst_args), env, server))
    raw = out / f"profile-{'before' if tree else 'now'}-{tasks}.txt"
    with _serving(env) as (server, url, folder):
        _profile_burst(env, server, [str(events), str(tasks), url, folder], rate, raw)
    samples = summarize(raw.read_text())
    us_per_sample = 1e6 / rate
    figures["us_per_event"] = {k: n * us_per_sample / events for k, n in samples.items()}
    figures["raw_profile"] = str(raw)
    return figures


@contextlib.contextmanager
def _serving(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """A server of the version ``env`` imports, in a child process, and a temporary
    folder for its store and the burst's: the server is stopped, and gone, before the
    folder is removed.

    Raises:
        RuntimeError: The server did not start.
    """
    with (
        tempfile.TemporaryDirectory(prefix="trio_sync_bench_profile_") as folder,
        _stopped(
            subprocess.Popen(
                # -P: not the working directory on sys.path, so that the server runs the
                # version asked for (a checkout's own would shadow --before's).
                [sys.executable, "-P", "-c", SERVER, os.path.join(folder, "server.sqlite3")],
                env=env,
                # It reads stdin to its end: it ends when this process does, however.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        ) as server,
    ):
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url:
            raise RuntimeError("the server did not start (its errors are above)")
        yield server, url, folder


def _run_child(command: list[str], env: dict[str, str], server: subprocess.Popen[str]) -> str:
    """Runs a burst child to its end and returns the line it says; it is stopped if this
    process is interrupted or the server ends first.

    Raises:
        RuntimeError: It failed, or the server ended.
    """
    with _stopped(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)) as child:
        line = _next_line(child, server)
        child.wait(timeout=60)
    return line


def _next_line(child: subprocess.Popen[str], server: subprocess.Popen[str]) -> str:
    """The next line ``child`` says, watching that it and the server still run.

    Raises:
        RuntimeError: The child ended without a line, or the server ended.
    """
    assert child.stdout is not None
    while True:
        readable, _, _ = select.select([child.stdout], [], [], 0.5)
        if readable:
            line = child.stdout.readline().strip()
            if not line:
                raise RuntimeError("the burst failed (its errors are above)")
            return line
        if server.poll() is not None:
            raise RuntimeError("the server ended during the burst (its errors are above)")


@contextlib.contextmanager
def _stopped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``process``, stopped at the end of the block if it still runs (SIGTERM, then
    SIGKILL after 10 s), its pipes closed. (Not ``_common.spawn_server``'s own stop:
    this module must not import ``_common``, which imports this version's internals,
    where a burst runs another version.)"""
    with process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _profile_burst(
    env: dict[str, str], server: subprocess.Popen[str], burst_args: list[str], rate: int, raw: Path
) -> None:
    """A burst with py-spy attached for the burst alone (set-up and tear-down unseen).

    Raises:
        RuntimeError: The burst or py-spy failed.
    """
    paused = subprocess.Popen(
        _child("burst", *burst_args, "--paused"),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with _stopped(paused) as child:
        assert child.stdin is not None
        if _next_line(child, server) != "ready":
            raise RuntimeError("the burst failed before it began (its errors are above)")
        raw.unlink(missing_ok=True)
        sampling = subprocess.Popen(
            [*PY_SPY, "-r", str(rate), "-o", str(raw), "--pid", str(child.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with _stopped(sampling) as spy:
            said = _wait_for_sampling(spy)
            child.stdin.write("go\n")
            child.stdin.flush()
            _next_line(child, server)  # its figures: the burst is over
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
            said += spy.communicate(timeout=60)[0]
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no profile:\n{said[-3000:]}")
        child.stdin.write("stop\n")
        child.stdin.flush()
        child.wait(timeout=60)


def _wait_for_sampling(spy: subprocess.Popen[str]) -> str:
    """Returns what py-spy said once it says it samples.

    Raises:
        RuntimeError: It ended first (no permission to read the process, say).
    """
    assert spy.stdout is not None
    said = ""
    for line in spy.stdout:
        said += line
        if "Sampling process" in line:
            return said
    raise RuntimeError(f"py-spy could not sample the burst:\n{said[-3000:]}")


def print_table(columns: dict[str, dict]) -> None:
    names = list(columns)
    print(f"{'us of samples per event':<36}" + "".join(f"{n:>12}" for n in names))
    print("-" * (36 + 12 * len(names)))
    kinds = [k for k, _ in KINDS] + [OTHER]
    for kind in sorted(
        kinds, key=lambda k: -max(c["us_per_event"].get(k, 0) for c in columns.values())
    ):
        print(
            f"{kind:<36}"
            + "".join(f"{c['us_per_event'].get(kind, 0):>12,.1f}" for c in columns.values())
        )
    rows = [
        ("total sampled", lambda c: f"{sum(c['us_per_event'].values()):,.1f}"),
        ("client CPU us/event (no profiler)", lambda c: f"{c['cpu_us_per_event']:,.0f}"),
        ("event loop idle us/event", lambda c: f"{c['loop_idle_us_per_event']:,.0f}"),
        ("events/s (no profiler)", lambda c: f"{c['events_per_second']:,.0f}"),
    ]
    for label, cell in rows:
        print(f"{label:<36}" + "".join(f"{cell(c):>12}" for c in columns.values()))


def main() -> int:
    if sys.argv[1:2] == ["burst"]:
        events, tasks, url, folder = int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
        print(json.dumps(burst(events, tasks, url, folder, paused="--paused" in sys.argv)))
        return 0
    # The shared helpers import this version's internals: not in the burst, which must
    # run any version (--before).
    from _common import run_script

    run_script(_profile_main)
    return 0


def _profile_main() -> int:
    from _common import DEFAULT_OUT, positive_int, replace_whole, writable_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=positive_int, default=16, help="committing tasks (1 or 16)")
    parser.add_argument("--events", type=positive_int, default=20_000)
    parser.add_argument("--rate", type=positive_int, default=500, help="py-spy samples a second")
    parser.add_argument("--before", type=Path, help="a folder holding an older trio_sync")
    parser.add_argument("--out-dir", type=writable_folder, default=str(DEFAULT_OUT))
    args = parser.parse_args()
    if args.before is not None and not (args.before / "trio_sync" / "__init__.py").exists():
        print(f"{args.before} holds no trio_sync package", file=sys.stderr)
        return 2
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    columns: dict[str, dict] = {}
    try:
        if args.before is not None:
            columns["before"] = measure(
                args.before, args.events, args.tasks, args.rate, args.out_dir
            )
        columns["now"] = measure(None, args.events, args.tasks, args.rate, args.out_dir)
    except RuntimeError as exc:
        traceback.print_exception(exc, limit=0)
        return 1
    print(f"profile: {args.events:,} events committed by {args.tasks} task(s), client process")
    print_table(columns)
    try:
        replace_whole(args.out_dir / "profile_burst.json", json.dumps(columns, indent=2).encode())
    except OSError as exc:
        print(f"results not written: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
