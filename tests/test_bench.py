"""The benchmarks run: each script with --quick, as a user would, prints its tables and
writes its results. No timing is asserted here: the speed targets live in bench/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
