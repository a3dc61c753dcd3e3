"""Heartbeat decisions and status derivation, without an event loop."""

from __future__ import annotations

import pytest

from trio_sync.protocol import (
    ConnectionDead,
    Heartbeat,
    HeartbeatTimings,
    KickPush,
    RestartPull,
    SendPing,
    backoff_delay,
    derive_status,
)

T = HeartbeatTimings(interval=5.0, pong_timeout=10.0, stuck_ticks=2)


def test_ping_then_dead_when_no_pong_arrives() -> None:
    beat = Heartbeat(T)
    assert beat.tick(5.0, upstream_head=0, push_stuck=False) == [SendPing(1)]
    assert beat.tick(10.0, upstream_head=0, push_stuck=False) == []
    assert beat.tick(15.0, upstream_head=0, push_stuck=False) == [ConnectionDead("no pong for 10s")]


def test_pong_clears_the_ping_and_a_new_one_goes_out() -> None:
    beat = Heartbeat(T)
    beat.tick(5.0, upstream_head=0, push_stuck=False)
    beat.on_pong(1, server_head=0)
    assert beat.tick(10.0, upstream_head=0, push_stuck=False) == [SendPing(2)]


def test_stalled_stream_restarts_the_pull_after_two_ticks_without_progress() -> None:
    beat = Heartbeat(T)
    beat.note_server_head(9)
    actions = []
    for i, now in enumerate((5.0, 10.0, 15.0)):
        beat.on_pong(i, 9)
        actions.append(
            [
                a
                for a in beat.tick(now, upstream_head=3, push_stuck=False)
                if not isinstance(a, SendPing)
            ]
        )
    assert actions[:2] == [[], []]
    assert actions[2] == [RestartPull("server head 9 ahead of 3 with no progress")]


def test_progress_is_not_a_stall() -> None:
    beat = Heartbeat(T)
    beat.note_server_head(100)
    for i, head in enumerate((10, 20, 30, 40)):
        beat.on_pong(i, 100)
        assert not any(
            isinstance(a, RestartPull)
            for a in beat.tick(5.0 * (i + 1), upstream_head=head, push_stuck=False)
        )


def test_stuck_queue_is_kicked_after_two_ticks_and_reported() -> None:
    beat = Heartbeat(T)
    beat.tick(5.0, upstream_head=0, push_stuck=True)
    beat.on_pong(1, 0)
    assert KickPush("push queue stuck for 2 ticks") in beat.tick(
        10.0, upstream_head=0, push_stuck=True
    )
    assert beat.stuck
    beat.on_pong(2, 0)
    beat.tick(15.0, upstream_head=0, push_stuck=False)
    assert not beat.stuck


@pytest.mark.parametrize(
    ("phase", "pending", "head", "server", "stuck", "expected"),
    [
        ("connected", 0, 5, 5, False, "synced"),
        ("connected", 1, 5, 5, False, "syncing"),
        ("connected", 0, 4, 5, False, "syncing"),
        ("connected", 0, 5, None, False, "syncing"),
        ("connected", 0, 5, 5, True, "stuck"),
        ("disconnected", 0, 5, 5, False, "disconnected"),
        ("connecting", 0, 5, 5, False, "connecting"),
        ("incompatible", 0, 5, 5, True, "incompatible"),
    ],
)
def test_status_is_green_only_when_both_directions_are_done(
    phase: str, pending: int, head: int, server: int | None, stuck: bool, expected: str
) -> None:
    status = derive_status(
        phase,
        pending=pending,
        upstream_head=head,  # type: ignore[arg-type]
        server_head=server,
        stuck=stuck,
        last_error=None,
    )
    assert status.state == expected
    assert status.connected == (phase == "connected")


def test_backoff_delay_bounds() -> None:
    assert backoff_delay(1, base=0.1, cap=10, jitter=0.0) == pytest.approx(0.05)
    assert backoff_delay(3, base=0.1, cap=10, jitter=0.5) == pytest.approx(0.3)
    assert backoff_delay(500, base=0.1, cap=10, jitter=0.0) == 5.0
    with pytest.raises(ValueError):
        backoff_delay(0, base=1, cap=1, jitter=0)
