"""The silence watch, sans-IO: a probe after a round-trip timeout of silence while a push
waits, a silent connection after another; anything heard starts the wait again."""

from __future__ import annotations

from trio_sync.protocol import SendProbe, SilenceWatch, Silent

TIMEOUT = 0.5


def test_idle_watch_has_no_deadline_and_nothing_to_do() -> None:
    watch = SilenceWatch()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(100.0, heard_at=None, timeout=TIMEOUT) is None


def test_a_push_answered_in_time_costs_nothing() -> None:
    watch = SilenceWatch()
    assert watch.on_push_sent(1.0) is True  # idle until now: the caller wakes its task
    assert watch.on_push_sent(1.1) is False  # already watching, from the first push
    assert watch.deadline(TIMEOUT) == 1.5
    watch.on_push_answered()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(1.5, heard_at=1.2, timeout=TIMEOUT) is None


def test_silence_after_a_push_gets_a_probe_then_a_verdict() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(10.0)
    assert watch.check(10.4, heard_at=None, timeout=TIMEOUT) is None  # early: nothing
    assert watch.check(10.5, heard_at=None, timeout=TIMEOUT) == SendProbe()
    assert watch.deadline(TIMEOUT) == 11.0
    verdict = watch.check(11.0, heard_at=None, timeout=TIMEOUT)
    assert isinstance(verdict, Silent)
    assert "nothing received for 1s" in verdict.reason


def test_anything_heard_after_the_probe_means_alive_and_the_watch_rests() -> None:
    # A pong, a page, bytes of a large frame: the connection is alive. The unanswered push
    # is the push machine's to retry; the watch waits for the next push (one probe per push
    # at most, even if this one's ack was lost for good).
    watch = SilenceWatch()
    watch.on_push_sent(10.0)
    assert watch.check(10.5, heard_at=9.0, timeout=TIMEOUT) == SendProbe()
    assert watch.check(11.0, heard_at=10.6, timeout=TIMEOUT) is None
    assert watch.deadline(TIMEOUT) is None
    assert watch.on_push_sent(12.0) is True  # a retry: watched afresh
    assert watch.check(12.5, heard_at=10.6, timeout=TIMEOUT) == SendProbe()


def test_something_heard_before_the_push_does_not_count() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(5.0)
    assert watch.check(5.5, heard_at=4.9, timeout=TIMEOUT) == SendProbe()


def test_arrivals_before_the_deadline_push_it_back() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    # Pages keep arriving while the ack is slow: never a probe.
    for now in [0.5, 1.0, 1.5, 2.0]:
        assert watch.check(now, heard_at=now - 0.1, timeout=TIMEOUT) is None
    assert watch.check(2.4, heard_at=1.9, timeout=TIMEOUT) == SendProbe()


def test_an_answer_after_the_probe_ends_the_watch() -> None:
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    assert watch.check(0.5, heard_at=None, timeout=TIMEOUT) == SendProbe()
    watch.on_push_answered()
    assert watch.deadline(TIMEOUT) is None
    assert watch.check(5.0, heard_at=0.7, timeout=TIMEOUT) is None
    # The next push starts a fresh watch, with a fresh probe.
    watch.on_push_sent(6.0)
    assert watch.check(6.5, heard_at=0.7, timeout=TIMEOUT) == SendProbe()


def test_the_timeout_in_force_is_used_at_each_look() -> None:
    # The round-trip timeout is measured and moves: the watch takes the current one.
    watch = SilenceWatch()
    watch.on_push_sent(0.0)
    assert watch.check(0.5, heard_at=None, timeout=2.0) is None
    assert watch.deadline(2.0) == 2.0
    assert watch.check(2.0, heard_at=None, timeout=2.0) == SendProbe()
