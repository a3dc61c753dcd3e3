"""The status rules as tables, without an event loop: derive_status, the catch-up meter
and the reused-client-id check."""

from __future__ import annotations

from typing import Any

import pytest

from trio_sync.protocol import (
    CatchUpMeter,
    CatchUpProgress,
    FastFailures,
    SyncStatus,
    derive_status,
    reused_id_problem,
)

FACTS = dict(pending=0, upstream_head=5, server_head=5, stuck=False, last_error=None)


def status(phase: str, **changes: Any) -> SyncStatus:
    """The status of the synced FACTS with ``changes`` applied."""
    return derive_status(phase, **{**FACTS, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "changes", "state"),
    [
        ("connected", {}, "synced"),
        ("connected", {"pending": 1}, "syncing"),
        ("connected", {"server_head": 9}, "syncing"),
        ("connected", {"server_head": None}, "syncing"),
        ("connected", {"stuck": True}, "stuck"),
        ("connected", {"failing_fast": True}, "stuck"),
        ("connecting", {}, "connecting"),
        ("disconnected", {}, "disconnected"),
        # Failing fast is stuck even while not connected: waiting will not heal it.
        ("disconnected", {"failing_fast": True}, "stuck"),
        ("connecting", {"failing_fast": True}, "stuck"),
        # Incompatible wins over everything: only a person (or reset()) fixes it.
        ("incompatible", {"failing_fast": True, "stuck": True}, "incompatible"),
    ],
)
def test_state(phase: str, changes: dict[str, object], state: str) -> None:
    assert status(phase, **changes).state == state


def test_since_moves_only_when_the_state_does() -> None:
    first = status("connected", pending=1, now=100.0)
    assert (first.state, first.since) == ("syncing", 100.0)
    same = status("connected", pending=2, previous=first, now=105.0)
    assert (same.state, same.since) == ("syncing", 100.0)
    synced = status("connected", previous=same, now=110.0)
    assert (synced.state, synced.since, synced.last_synced_at) == ("synced", 110.0, 110.0)


def test_last_synced_at_is_kept_while_not_synced() -> None:
    synced = status("connected", now=50.0)
    offline = status("disconnected", previous=synced, now=80.0)
    assert offline.last_synced_at == 50.0 and offline.since == 80.0
    # From the store after a restart, with no previous status:
    restarted = status("connecting", last_synced_at=50.0, now=90.0)
    assert restarted.last_synced_at == 50.0


def test_connect_attempts_show_only_while_not_connected() -> None:
    assert status("connecting", connect_attempts=4).connect_attempts == 4
    assert status("connected", connect_attempts=4).connect_attempts == 0


def test_progress_shows_only_while_syncing() -> None:
    progress = CatchUpProgress(done=1, total=2, bytes=10, rate=None, eta=None)
    assert status("connected", server_head=9, progress=progress).progress == progress
    assert status("disconnected", server_head=9, progress=progress).progress is None


def test_catch_up_meter_counts_from_where_it_started() -> None:
    meter = CatchUpMeter()
    meter.observe(10.0, upstream_head=100, server_head=1100)
    assert meter.progress(10.0, upstream_head=100, server_head=1100) == CatchUpProgress(
        done=0, total=1000, bytes=0, rate=None, eta=None
    )
    meter.observe(10.2, upstream_head=100, server_head=1100, received=4096)
    # Too soon for a rate: none rather than a wild one.
    assert meter.progress(10.2, upstream_head=300, server_head=1100) == CatchUpProgress(
        done=200, total=1000, bytes=4096, rate=None, eta=None
    )
    assert meter.progress(12.0, upstream_head=500, server_head=1100) == CatchUpProgress(
        done=400, total=1000, bytes=4096, rate=200.0, eta=3.0
    )
    # The server moves on meanwhile: the total grows, done stays.
    assert meter.progress(12.0, upstream_head=500, server_head=1500) == CatchUpProgress(
        done=400, total=1400, bytes=4096, rate=200.0, eta=5.0
    )
    meter.observe(13.0, upstream_head=1500, server_head=1500)
    assert not meter.active
    assert meter.progress(13.0, upstream_head=1500, server_head=1500) is None


@pytest.mark.parametrize(
    ("committed", "held", "refused"),
    [
        (None, 10, False),  # the client did not say: nothing to compare
        (0, 0, False),  # a new client, a new id
        (5, 3, False),  # acks lost: the server has fewer than committed
        (5, 5, False),
        (0, 3, True),  # a fresh store with a used id
        (2, 3, True),  # a store restored from an old backup
    ],
)
def test_reused_id(committed: int | None, held: int, refused: bool) -> None:
    problem = reused_id_problem("A", committed=committed, held=held)
    assert (problem is not None) == refused
    if problem:
        assert f"client_seq {held}" in problem and "reset()" in problem


@pytest.mark.parametrize(
    ("attempts", "stuck"),
    [
        # (ended at, up since, answered): each attempt in a row
        ([(1.0, 0.5, False)] * 3, True),  # dropped within 2 s of connecting, three times
        ([(0.0, None, True)] * 3, True),  # an HTTP answer, three times
        ([(0.0, None, True)] * 2, False),  # two are not yet a run
        ([(0.0, None, False)] * 5, False),  # nothing answers: offline, not stuck
        ([(0.0, None, True), (0.0, None, True), (0.0, None, False), (0.0, None, True)], False),
        ([(3.0, 0.0, False)] * 3, False),  # each stayed up 3 s: not failing fast
    ],
)
def test_fast_failures(attempts: list[tuple[float, float | None, bool]], stuck: bool) -> None:
    failures = FastFailures()
    for ended, up_since, answered in attempts:
        failures.on_failure(ended, up_since=up_since, answered=answered)
    assert failures.stuck == stuck
    failures.on_stable()
    assert not failures.stuck and failures.count == 0
