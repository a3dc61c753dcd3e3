"""The silence watch, sans-IO: a probe after a round-trip timeout of silence while a push
waits, a silent connection after another; anything received starts the wait again."""

from __future__ import annotations

import pytest

from trio_sync.protocol import SendProbe, SilenceWatch, Silent

TIMEOUT = 0.5


def test_idle_watch_has_no_deadline_and_nothing_to_do() -> None:
    watch = SilenceWatch()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(100.0, received=0, timeout=TIMEOUT) is None


def test_a_push_answered_in_time_costs_nothing() -> None:
    watch = SilenceWatch()
    assert watch.on_push_sent(1.0) is True  # idle until now: the caller wakes its task
    assert watch.on_push_sent(1.1) is False  # already watching, from the first push
    assert watch.deadline(TIMEOUT) == 1.5
    watch.on_push_answered()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(1.5, received=1, timeout=TIMEOUT) is None


@pytest.mark.parametrize(
    ("received_by_probe_deadline", "expected"),
    [
        # Nothing at all arrived after the probe: silent.
        (0, Silent),
        # Something arrived (a pong, a page, bytes of a big frame): alive, wait again.
        (1, type(None)),
    ],
)
def test_a_silent_push_gets_a_probe_then_a_verdict(
    received_by_probe_deadline: int, expected: type
) -> None:
    watch = SilenceWatch()
    watch.on_push_sent(10.0)
    assert watch.check(10.4, received=0, timeout=TIMEOUT) is None  # early wake-up: nothing
    assert watch.check(10.5, received=0, timeout=TIMEOUT) == SendProbe()
    assert watch.deadline(TIMEOUT) == 11.0
    verdict = watch.check(11.0, received=received_by_probe_deadline, timeout=TIMEOUT)
    assert isinstance(verdict, expected)
    if isinstance(verdict, Silent):
        assert "nothing received for 1s" in verdict.reason
    else:
        # Heard at 11.0: the wait starts again from there, with a new probe if need be.
        assert watch.deadline(TIMEOUT) == 11.5
        assert watch.check(11.5, received=1, timeout=TIMEOUT) == SendProbe()


def test_arrivals_before_the_deadline_push_it_back() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    # Pages keep arriving while the ack is slow: never a probe.
    for step, now in enumerate([0.5, 1.0, 1.5, 2.0], start=1):
        assert watch.check(now, received=step, timeout=TIMEOUT) is None
    assert watch.check(2.5, received=4, timeout=TIMEOUT) == SendProbe()


def test_an_answer_after_the_probe_ends_the_watch() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    assert watch.check(0.5, received=0, timeout=TIMEOUT) == SendProbe()
    watch.on_push_answered()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(5.0, received=1, timeout=TIMEOUT) is None
    # The next push starts a fresh watch, with a fresh probe.
    watch.on_push_sent(6.0)
    assert watch.check(6.5, received=1, timeout=TIMEOUT) == SendProbe()


def test_the_timeout_in_force_is_used_at_each_look() -> None:
    # The round-trip timeout is measured and moves: the watch takes the current one.
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    assert watch.check(0.5, received=0, timeout=2.0) is None
    assert watch.deadline(2.0) == 2.0
    assert watch.check(2.0, received=0, timeout=2.0) == SendProbe()
