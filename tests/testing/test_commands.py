"""``trio-sync replay`` and ``trio-sync bench stall`` as a user runs them."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

from trio_sync.cli._bench import DEADLINE
from trio_sync.cli._bench import run as run_bench
from trio_sync.testing import run_scenario

CLI = [sys.executable, "-m", "trio_sync.cli"]


ROOT = Path(__file__).resolve().parents[2]


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "replay", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_replay_of_the_canonical_reproduction_shows_the_stall() -> None:
    parked = replay("--seed", "0", "--policy", "park", "--scenario", "lost-ack")
    assert parked.returncode == 1
    assert re.search(r"lost\.push_ack +to=A push_id=1", parked.stdout), parked.stdout
    assert "phase=parked" in parked.stdout and "STALLED" in parked.stdout
    fixed = replay("--seed", "0", "--policy", "supervised", "--scenario", "lost-ack")
    assert fixed.returncode == 0 and "converged at t=0.0060" in fixed.stdout


def test_replay_of_any_seed_is_the_same_run_every_time() -> None:
    first, second = replay("--seed", "12"), replay("--seed", "12")
    digest = re.compile(r"trace digest ([0-9a-f]{16})")
    assert first.returncode == 0, first.stdout + first.stderr
    assert digest.findall(first.stdout) == digest.findall(second.stdout) != []


def test_replay_refuses_a_bad_param_clearly() -> None:
    result = replay("--seed", "1", "--param", "clients")
    assert result.returncode == 2 and "--param takes name=value" in result.stderr
    result = replay("--seed", "1", "--param", "flavour=1")
    assert result.returncode == 2 and "unknown scenario parameters: ['flavour']" in result.stderr


TODO = "examples.todo.simulation"


def test_replay_of_a_workload_prints_its_report_and_the_same_digest_every_time() -> None:
    args = [
        "--seed",
        "5",
        "--workload",
        f"{TODO}:workload",
        "--invariant",
        f"{TODO}:same_list_everywhere",
    ]
    first, second = replay(*args), replay(*args, "--param", "edits=12")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("seed 5: ok at t=")
    assert "workload: devices=3, edits=12, outages=1" in first.stdout
    digest = re.compile(r"trace digest ([0-9a-f]{16})")
    assert digest.findall(first.stdout) == digest.findall(second.stdout) != []
    full = replay(*args, "--full-trace")
    assert "todo.edit" in full.stdout and "sim      converged" in full.stdout


def test_replay_of_a_workload_refuses_bad_arguments_clearly() -> None:
    cases = [
        (["--workload", f"{TODO}:workload", "--policy", "park"], "a workload chooses its own"),
        (["--workload", "no_such_module:workload"], "cannot import 'no_such_module'"),
        (["--workload", f"{TODO}:nothing"], "has no 'nothing'"),
        (["--workload", "workload"], "expected module:function"),
        (["--invariant", f"{TODO}:same_list_everywhere"], "need --workload"),
        (["--workload", f"{TODO}:workload", "--param", "colour=1"], "unknown parameters"),
    ]
    for args, message in cases:
        result = replay("--seed", "1", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_bench_prints_both_policies_and_plots_a_stalled_seed(tmp_path: Path) -> None:
    out = io.StringIO()
    plot = tmp_path / "stall.png"
    rows = run_bench(scenarios=4, seed=0, jobs=1, plot_path=str(plot), out=out)
    text = out.getvalue()
    assert len(rows) == 8
    for policy in ("park", "supervised"):
        line = next(line for line in text.splitlines() if line.startswith(policy))
        assert line.split()[1] == "4"  # scenarios
    supervised = next(line for line in text.splitlines() if line.startswith("supervised"))
    assert supervised.split()[2] == "0"  # stalled: none
    assert "park stalled in" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *CLI,
            "bench",
            "stall",
            "--scenarios",
            "2",
            "--jobs",
            "2",
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "policy" in result.stdout and "supervised" in result.stdout


def test_bench_writes_no_plot_unless_asked(tmp_path: Path) -> None:
    # Tried: trio-sync bench stall in a folder with a stall.png of one's own. The --plot
    # default was stall.png: it was overwritten. Seed 1 stalls under park, so a plot
    # would be drawn if one were the default.
    result = subprocess.run(
        [*CLI, "bench", "stall", "--scenarios", "1", "--seed", "1", "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "park stalled in 1 of 1 scenarios" in result.stdout
    assert list(tmp_path.iterdir()) == []
    assert "plot:" not in result.stdout


def test_bench_replay_line_replays_the_bench_run_exactly() -> None:
    # Tried: the replay command the bench printed for its first stalled seed. It left out
    # the bench's deadline (120 virtual s; replay's default is 300), so the replayed run
    # stalled for longer and had another trace.
    out = io.StringIO()
    run_bench(scenarios=1, seed=1, jobs=1, plot_path=None, out=out)
    lines = [line for line in out.getvalue().splitlines() if "replay: " in line]
    assert len(lines) == 1 and lines[0].startswith("first seed stalled under park: 1;")
    command = shlex.split(lines[0].split("replay: ", 1)[1])
    assert command[:2] == ["trio-sync", "replay"]
    replayed = replay(*command[2:])
    assert replayed.returncode == 1 and "STALLED at t=120.0000" in replayed.stdout
    bench_run = run_scenario(1, policy="park", deadline=DEADLINE)
    assert f"trace digest {bench_run.trace_digest[:16]}" in replayed.stdout
