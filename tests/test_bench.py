"""The benchmarks run: each script with --quick, as a user would, prints its tables and
writes its results. No timing is asserted here: the speed targets live in bench/."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_sync.testing._pg_cluster import find_postgres_bin

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: Script -> the titles of the tables it prints.
SCRIPTS = {
    "throughput": ["burst:", "paced:"],
    "catchup": ["catch-up:"],
    "contention": ["contention:"],
    "fanout": ["fan-out:"],
    "abuse": ["abuse:"],
    "scaleout": ["scale-out:"],
    "files": ["files:"],
    "small_files": ["small files:"],
    "offline": ["offline commit:", "(c) 16 tasks commit() at once"],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_quick_run_prints_its_table_and_writes_results(name: str, tmp_path: Path) -> None:
    if name == "scaleout" and find_postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    for title in SCRIPTS[name]:
        header = next((i for i, line in enumerate(lines) if line.startswith(title)), None)
        assert header is not None, f"no {title!r} table in:\n{result.stdout}"
        assert set(lines[header + 2]) == {"-"}, "a table has a header rule under its columns"
        assert "trio_sync" in "\n".join(lines[header : header + 12])
    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["benchmark"] == name
    assert results["machine"]["cores"]


def test_a_missing_peer_is_reported_not_fatal(tmp_path: Path) -> None:
    # Hide pycrdt whether or not it is installed: the script must still run.
    hide = (
        "import sys, runpy; sys.modules['pycrdt'] = None; "
        f"sys.argv = ['throughput.py', '--quick', '--no-plot', '--events', '20', "
        f"'--seconds', '0.1', '--out-dir', {str(tmp_path)!r}]; "
        f"sys.path.insert(0, {str(BENCH)!r}); "
        f"runpy.run_path({str(BENCH / 'throughput.py')!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "pycrdt: n/a (not installed" in result.stdout
    assert "burst:" in result.stdout


def _load_profile_burst() -> Any:
    spec = importlib.util.spec_from_file_location("profile_burst", BENCH / "profile_burst.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_sorts_samples_by_kind_of_work_and_leaves_out_imports() -> None:
    profile = _load_profile_burst()
    raw = "\n".join(
        [
            "run (trio/_core/_run.py:1);commit (trio_sync/store/_sqlite.py:298) 7",
            "run (trio/_core/_run.py:1);_work (trio/_core/_thread_cache.py:211) 3",
            "run (trio/_core/_run.py:1);reschedule (trio/_core/_run.py:1897) 2",
            "run (trio/_core/_run.py:1);loads (trio_sync/protocol/_json.py:61) 4",
            "run (trio/_core/_run.py:1);events (wsproto/frame_protocol.py:1) 1",
            "run (trio/_core/_run.py:1);poll (trio_sync/protocol/_push.py:140) 5",
            "<module> (x.py:1);_find_and_load (<frozen importlib._bootstrap>:1176) 50",
            "<module> (x.py:1);main (x.py:3) 1",
            "a line py-spy would not write",
        ]
    )
    kinds = profile.summarize(raw)
    assert kinds == {
        "SQLite, rows (and the commit's fsync)": 7,
        "worker-thread hand-offs": 3,
        "Trio scheduling": 2,
        "codec (JSON, validation)": 4,
        "WebSocket framing": 1,
        "engine logic": 5,
        profile.OTHER: 1,
    }


def test_profile_burst_runs_through_the_public_api(tmp_path: Path) -> None:
    # What the profiled child runs: two clients, 16 tasks, through a real server process.
    profile = _load_profile_burst()
    with profile._serving(dict(os.environ)) as (_server, url, folder):
        result = subprocess.run(
            [sys.executable, str(BENCH / "profile_burst.py"), "burst", "64", "16", url, folder],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["events_per_second"] > 0
    assert figures["cpu_us_per_event"] > 0
    assert figures["loop_idle_us_per_event"] >= 0


def test_profile_refuses_a_before_folder_without_trio_sync(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "profile_burst.py"), "--before", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{tmp_path} holds no trio_sync package" in result.stderr


@pytest.mark.parametrize(
    ("script", "bad", "said"),
    [
        ("throughput", ["--events", "0"], "argument --events: 0 is not at least 1"),
        ("throughput", ["--rounds", "-1"], "argument --rounds: -1 is not at least 1"),
        ("throughput", ["--seconds", "nan"], "argument --seconds: 'nan' is not a finite number"),
        ("throughput", ["--tmp-dir", "/nonexistent/x"], "/nonexistent/x is not a folder"),
        ("fanout", ["--clients", "10,0"], "argument --clients: 0 is not at least 1"),
        ("fanout", ["--clients", "abc"], "'abc' is not comma-separated whole numbers"),
        ("fanout", ["--rate", "0"], "argument --rate: 0 is not above 0"),
        ("contention", ["--clients", "1"], "argument --clients: 1 is not at least 2"),
        ("catchup", ["--events", "-5"], "argument --events: -5 is not at least 1"),
        ("offline", ["--commits", "0"], "argument --commits: 0 is not at least 1"),
        ("abuse", ["--connections", "0"], "argument --connections: 0 is not at least 1"),
    ],
)
def test_a_bad_size_is_refused_before_anything_runs(script: str, bad: list[str], said: str) -> None:
    # Tried: sizes of 0, below 0, not a number, a missing folder. Before, 0 meant "the
    # default" (a run of minutes), a negative count hung or printed negative rates.
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick", *bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


def test_a_results_folder_that_is_a_file_is_refused_at_start(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("my notes")
    result = subprocess.run(
        [sys.executable, str(BENCH / "offline.py"), "--quick", "--out-dir", str(not_a_folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{not_a_folder} is not a folder" in result.stderr
    assert "offline commit:" not in result.stdout  # refused before measuring
    assert not_a_folder.read_text() == "my notes"


def test_results_that_cannot_be_written_leave_the_last_ones_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: the disk fills while the new results are written (simulated at the rename,
    # the last step). Before, the old file was emptied first and left half written.
    monkeypatch.syspath_prepend(str(BENCH))
    import _common

    _common.write_json(tmp_path, "offline", {"rounds": [1, 2, 3]})
    before = (tmp_path / "offline.json").read_text()
    umask = os.umask(0)
    os.umask(umask)
    # Readable as any file this user makes (the temporary file it was is made 0600).
    assert stat.S_IMODE((tmp_path / "offline.json").stat().st_mode) == 0o666 & ~umask

    def disk_full(source: str, destination: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_common.os, "replace", disk_full)
    with pytest.raises(SystemExit, match=r"results not written to .*No space left on device"):
        _common.write_json(tmp_path, "offline", {"rounds": [4]})
    assert (tmp_path / "offline.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline.json"]  # no temporary


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_stops_a_run_and_its_server(tmp_path: Path) -> None:
    # Tried: SIGTERM (what kill, timeout and CI runners send) during a burst. Before, the
    # script died at once and its server process went on running, orphaned.
    bench = subprocess.Popen(
        [
            *(sys.executable, str(BENCH / "throughput.py"), "--events", "1000000"),
            *("--rounds", "1", "--no-plot", "--out-dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _within(60, lambda: bool(_children_of(bench.pid))), "no server started"
        servers = _children_of(bench.pid)
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, stderr[-3000:]
    assert stderr.rstrip().endswith("interrupted")
    assert _within(10, lambda: not any(_running(pid) for pid in servers))


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextlib.contextmanager
def _profile_running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """profile_burst.py on a burst too long to end by itself, with a py-spy that fails
    (it is not needed before the burst without the profiler ends), once both its server
    and its burst run: the run and their pids. Killed at the end if it still runs."""
    fake = tmp_path / "bin" / "py-spy"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    env["TMPDIR"] = str(tmp_path)  # what a killed run cannot remove stays with the test
    with subprocess.Popen(
        [
            *(sys.executable, str(BENCH / "profile_burst.py"), "--tasks", "1"),
            *("--events", "100000000", "--out-dir", str(tmp_path / "out")),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as profile:
        try:
            assert _within(60, lambda: _server_and_burst(profile.pid) is not None)
            pids = _server_and_burst(profile.pid)
            assert pids is not None
            yield profile, *pids
        finally:
            if profile.poll() is None:
                profile.kill()
                profile.communicate(timeout=30)


def _server_and_burst(parent: int) -> tuple[int, int] | None:
    children = {_command_line(pid): pid for pid in _children_of(parent)}
    server = next((pid for line, pid in children.items() if " -P -c " in line), None)
    burst = next((pid for line, pid in children.items() if " burst " in line), None)
    return (server, burst) if server and burst else None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_profile_run_takes_its_server_and_burst_with_it(tmp_path: Path) -> None:
    # Tried: SIGKILL of profile_burst.py during a burst. Before, its server ran on,
    # orphaned, holding the output pipe (a `| tee` never ended), and so did the burst.
    with _profile_running(tmp_path) as (_profile, server, burst):
        pass  # killed on the way out
    assert _within(10, lambda: not any(_running(pid) for pid in (server, burst)))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_profile_run_whose_server_dies_ends_with_an_error(tmp_path: Path) -> None:
    # Tried: the server killed during the burst (an OOM kill, say). Before, the burst's
    # clients waited for it for ever, and so did the run.
    with _profile_running(tmp_path) as (profile, server, burst):
        os.kill(server, signal.SIGKILL)
        _, stderr = profile.communicate(timeout=60)
    assert profile.returncode == 1
    assert "the server ended during the burst" in stderr
    assert _within(10, lambda: not any(_running(pid) for pid in (server, burst)))
    assert not any(tmp_path.glob("out/profile_burst.json"))
