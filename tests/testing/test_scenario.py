"""The simulator: determinism, parameters, and what a run reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from trio_sync.testing import ScenarioParams, canonical_params, run_scenario
from trio_sync.testing._canonical import CANONICAL

CLI = [sys.executable, "-m", "trio_sync.cli"]

DIGEST = "from trio_sync.testing import run_scenario; print(run_scenario({}).trace_digest)"


def digest_in_fresh_process(seed: int, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", DIGEST.format(seed)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return result.stdout.strip()


def test_same_seed_gives_the_same_trace_in_fresh_processes() -> None:
    # Seed 2 has 4 clients, server restarts and client crashes: plenty of concurrency for
    # Trio's scheduler to order differently if it were not seeded.
    here = run_scenario(2)
    assert here.params.clients == 4 and here.params.client_crashes > 0
    first = digest_in_fresh_process(2, "1")
    second = digest_in_fresh_process(2, "2")  # other string hashing too
    assert first == second == here.trace_digest
    again = run_scenario(2)  # and again in this process, record by record
    assert [r.line() for r in again.trace] == [r.line() for r in here.trace]


def test_a_different_seed_gives_a_different_trace() -> None:
    one, two = run_scenario(3), run_scenario(4)
    assert one.trace_digest != two.trace_digest
    assert [str(r) for r in one.trace][:50] != [str(r) for r in two.trace][:50]


def test_the_simulation_leaves_trio_scheduling_as_it_found_it() -> None:
    from trio._core import _run

    flag, state = _run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate()
    run_scenario(5, events=3)
    assert flag == _run._ALLOW_DETERMINISTIC_SCHEDULING and _run._r.getstate() == state


def test_every_parameter_comes_from_the_seed_and_pins_touch_only_themselves() -> None:
    drawn = ScenarioParams.draw(11)
    assert drawn == ScenarioParams.draw(11)
    assert 2 <= drawn.clients <= 4 and all(1 <= n <= 400 for n in drawn.events)
    assert drawn.commit_batch in (1, 2, 10, 100) and drawn.push_batch_size in (1, 2, 10, 100)
    assert 0 <= drawn.latency <= 0.015
    pinned = ScenarioParams.draw(11, push_batch_size=7, ack_loss=0.5)
    assert (pinned.push_batch_size, pinned.ack_loss) == (7, 0.5)
    assert pinned.latency == drawn.latency and pinned.events == drawn.events
    assert ScenarioParams.draw(11, events=5).events == (5,) * drawn.clients
    varied = {ScenarioParams.draw(seed).clients for seed in range(40)}
    assert varied == {2, 3, 4}


def test_unknown_parameters_and_policies_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown scenario parameters: \['colour'\]"):
        run_scenario(1, colour="red")
    with pytest.raises(ValueError, match="unknown policy 'lazy'"):
        run_scenario(1, policy="lazy")


def test_a_run_reports_what_was_committed_and_where_it_ended() -> None:
    result = run_scenario(7, clients=2, events=(12, 30), ack_loss=0.3, page_loss=0.2)
    assert result.converged and not result.stalled
    assert result.events_committed == 42 == len(result.server_log)
    assert {cid: len(events) for cid, events in result.committed.items()} == {"A": 12, "B": 30}
    assert all(log == result.server_log for log in result.logs.values())
    assert result.pending_timeline[0] == (0.0, 0) and result.pending_timeline[-1][1] == 0
    times = [record.t for record in result.trace]
    assert times == sorted(times) and result.virtual_seconds == times[-1]
    assert any(record.what == "lost.push_ack" for record in result.trace)


def test_replay_command_carries_the_pins() -> None:
    result = run_scenario(3, clients=2, events=(3, 4))
    assert result.replay_command == (
        "trio-sync replay --seed 3 --policy supervised --param clients=2 --param 'events=(3, 4)'"
    )


def test_events_of_another_length_than_clients_are_refused() -> None:
    # Tried: trio-sync replay --param 'events=(1,2)' --param clients=1. It ran events=(1,)
    # without a word: the second count was cut off (and a shorter list was repeated).
    with pytest.raises(ValueError, match=re.escape("events=(1, 2) has 2 count(s), one per")):
        ScenarioParams.draw(0, clients=1, events=(1, 2))
    drawn = ScenarioParams.draw(0).clients
    with pytest.raises(ValueError, match=rf"but clients={drawn} \(drawn from the seed\)"):
        ScenarioParams.draw(0, events=(1,) * (drawn + 1))
    with pytest.raises(ValueError, match=r"events=\(\) has 0 count"):
        ScenarioParams.draw(0, clients=1, events=())
    # One count per client, or one count for all, as before.
    assert ScenarioParams.draw(0, clients=2, events=(1, 2)).events == (1, 2)
    assert ScenarioParams.draw(0, clients=3, events=4).events == (4, 4, 4)
    result = subprocess.run(
        [*CLI, "replay", "--seed", "0", "--param", "events=(1,2)", "--param", "clients=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "trio-sync replay: events=(1, 2) has 2 count(s), one per client, but clients=1: "
        "give 1 count(s), or pin clients=2\n"
    )


def test_replay_command_names_the_canonical_scenario_that_was_run() -> None:
    # Tried: trio-sync replay --scenario lost-ack-and-echo --policy park. Its replay line
    # said --scenario lost-ack --param 'lose_pages=(1,)': the same run, not what was typed.
    for name in CANONICAL:
        result = run_scenario(0, policy="park", **canonical_params(name))
        assert result.replay_command == f"trio-sync replay --seed 0 --policy park --scenario {name}"
    extra = run_scenario(0, policy="park", **canonical_params("lost-ack"), lose_pages=(2,))
    assert extra.replay_command.endswith("--scenario lost-ack --param 'lose_pages=(2,)'")
