"""The round-trip estimate and the stream watch: losses noticed in about one round trip.
Pure, so tables without an event loop."""

from __future__ import annotations

import pytest

from trio_sync.protocol import RoundTrip, StreamWatch


def test_the_estimate_follows_rfc_6298() -> None:
    estimate = RoundTrip()
    assert estimate.timeout(floor=0.1, cap=9.0) == 9.0  # nothing measured: the cap
    estimate.sample(0.1)
    assert (estimate.smoothed, estimate.variation) == (0.1, 0.05)
    assert estimate.timeout(floor=0.01, cap=9.0) == pytest.approx(0.3)
    estimate.sample(0.3)
    assert estimate.smoothed == pytest.approx(0.125)
    assert estimate.variation == pytest.approx(0.0875)
    assert estimate.timeout(floor=0.5, cap=9.0) == 0.5  # the floor
    assert estimate.timeout(floor=0.01, cap=0.2) == 0.2  # the cap


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (time, our head, the server's head known) ..., then (check time, timeout): answer
        ([(0.0, 5, 5)], [(100.0, None)]),  # caught up: nothing to wait for
        ([(0.0, 5, 8)], [(0.09, None), (0.1, "stalled")]),  # behind and nothing comes
        ([(0.0, 5, 8), (0.08, 6, 8)], [(0.1, None), (0.18, "stalled")]),  # progress resets
        ([(0.0, 5, 8), (0.05, 8, 8)], [(10.0, None)]),  # caught up in time
    ],
)
def test_a_stream_that_stops_delivering_is_noticed_after_the_timeout(
    steps: list[tuple[float, int, int]], expected: list[tuple[float, str | None]]
) -> None:
    watch = StreamWatch()
    for now, ours, servers in steps:
        watch.observe(now, upstream_head=ours, server_head=servers)
    for now, answer in expected:
        stalled = watch.check(now, timeout=0.1)
        assert (stalled is not None) == (answer == "stalled"), (now, stalled)


def test_restarts_that_bring_nothing_wait_twice_as_long_each_time() -> None:
    watch = StreamWatch()
    watch.observe(0.0, upstream_head=5, server_head=8)
    deadlines = []
    now = 0.0
    for _ in range(4):
        deadline = watch.deadline(0.1)
        assert deadline is not None
        deadlines.append(round(deadline - now, 6))
        now = deadline
        assert watch.check(now, 0.1) is not None
    assert deadlines == [0.1, 0.2, 0.4, 0.8]
    watch.observe(now, upstream_head=6, server_head=8)  # progress: back to one timeout
    assert watch.deadline(0.1) == pytest.approx(now + 0.1)
