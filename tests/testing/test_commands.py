"""``trio-sync replay`` and ``trio-sync bench stall`` as a user runs them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from trio_sync._bench_stall import run as run_bench

CLI = [sys.executable, "-m", "trio_sync.cli"]


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "replay", *args], capture_output=True, text=True, timeout=120)


def test_replay_of_the_canonical_reproduction_shows_the_stall() -> None:
    parked = replay("--seed", "0", "--policy", "park", "--scenario", "lost-ack")
    assert parked.returncode == 1
    assert re.search(r"lost\.push_ack +to=A push_id=1", parked.stdout), parked.stdout
    assert "phase=parked" in parked.stdout and "STALLED" in parked.stdout
    fixed = replay("--seed", "0", "--policy", "supervised", "--scenario", "lost-ack")
    assert fixed.returncode == 0 and "converged at t=0.0080" in fixed.stdout


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
