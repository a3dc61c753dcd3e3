"""The executor's pure decisions: order, de-duplication, backoff, stuck detection."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from trio_sync.files import (
    FileOptions,
    ProgressThrottle,
    RetryPolicy,
    StuckQueueWatch,
    TransferQueue,
)
from trio_sync.files._queue import (
    idle_connection_closes_at,
    keeps_connection,
    runs_again_on_new_connection,
    stale_on_open,
)


def test_priority_first_then_fifo_and_bounded_concurrency() -> None:
    queue = TransferQueue(2, RetryPolicy())
    for key in "abc":
        assert queue.add(key)
    assert not queue.add("a")  # de-duplicated
    queue.add("c", priority=True)
    assert queue.next_ready(0) == "c"
    queue.start("c")
    assert queue.next_ready(0) == "a"
    queue.start("a")
    assert queue.next_ready(0) is None  # two in flight
    assert not queue.add("a")  # in flight: not queued twice


def test_backoff_is_jittered_exponential_capped_and_gives_up() -> None:
    queue = TransferQueue(1, RetryPolicy(base=1, cap=60, max_attempts=3))
    queue.add("a")
    queue.start("a")
    assert queue.failed("a", 100.0, 0.0) == 100.5
    queue.released("a")  # its worker has written the failure down
    assert queue.next_ready(100.4) is None and queue.next_ready(100.5) == "a"
    queue.start("a")
    assert queue.failed("a", 200.0, 0.999) is not None
    queue.released("a")
    queue.start("a")
    assert queue.failed("a", 300.0, 0.0) is None  # third failure: given up
    assert "a" not in queue
    assert RetryPolicy().delay(20, 0.999) <= 60


def test_missing_blob_backs_off_without_exhausting_and_refusal_gives_up() -> None:
    queue = TransferQueue(1, RetryPolicy(max_attempts=1))
    queue.add("a")
    queue.start("a")
    # Not there yet: asked again soon (0.1 s first step, jittered), never given up.
    assert queue.failed("a", 0.0, 0.5, counts=False) == pytest.approx(0.075)
    for failures in range(2, 12):
        queue.released("a")
        queue.start("a")
        retry_at = queue.failed("a", 100.0, 0.999, counts=False)
        assert retry_at is not None and retry_at - 100.0 <= min(60.0, 0.1 * 2 ** (failures - 1))
    assert retry_at - 100.0 > 50.0  # up to the cap, like any backoff
    queue.released("a")
    queue.start("a")
    assert queue.failed("a", 0.0, 0.5, retryable=False) is None


def test_failures_that_do_not_count_never_hasten_giving_up() -> None:
    # Tried: a download that waited for its upload 20 times ("missing", not counted)
    # then failed once for real was given up at once with max_attempts=3: the limit was
    # checked against every failure.
    queue = TransferQueue(1, RetryPolicy(max_attempts=3))
    queue.add("a")
    for _ in range(20):
        queue.start("a")
        assert queue.failed("a", 0.0, 0.5, counts=False) is not None
        queue.released("a")
    for counted in (1, 2):
        queue.start("a")
        assert queue.failed("a", 0.0, 0.5) is not None, counted
        queue.released("a")
    queue.start("a")
    assert queue.failed("a", 0.0, 0.5) is None  # the third that counts


def test_a_failure_that_does_not_count_counts_when_the_one_before_did_not_either() -> None:
    # The executor's rule for an upload refused for bytes that were not its own: free
    # once, counted when it repeats in a row (a server that refuses every upload).
    queue = TransferQueue(1, RetryPolicy(max_attempts=3))
    queue.add("a")
    queue.start("a")
    assert not queue.last_failure_uncounted("a")
    assert queue.failed("a", 0.0, 0.5, counts=False) is not None
    assert queue.last_failure_uncounted("a")
    queue.released("a")
    queue.start("a")
    assert queue.last_failure_uncounted("a")
    assert queue.failed("a", 0.0, 0.5) is not None
    assert not queue.last_failure_uncounted("a")


def test_interrupted_transfer_is_queued_again_at_once() -> None:
    queue = TransferQueue(1, RetryPolicy())
    queue.add("a")
    queue.start("a")
    queue.released("a")
    assert queue.next_ready(0) == "a"


def test_stuck_after_two_ticks_only_when_online_unpaused_and_idle() -> None:
    watch = StuckQueueWatch()
    assert not watch.tick(ready=1, in_flight=0, online=True, paused=False)
    assert watch.tick(ready=1, in_flight=0, online=True, paused=False)
    assert not watch.tick(ready=1, in_flight=0, online=True, paused=False)  # counts again
    for kwargs in (
        {"in_flight": 1, "online": True, "paused": False},
        {"in_flight": 0, "online": False, "paused": False},
        {"in_flight": 0, "online": True, "paused": True},
    ):
        watch = StuckQueueWatch()
        assert not any(watch.tick(ready=1, **kwargs) for _ in range(5))  # type: ignore[arg-type]


def test_progress_throttle_and_stale_recovery() -> None:
    throttle = ProgressThrottle(0.25)
    sent = [throttle.should_send(t / 100, t, 100) for t in range(100)]
    assert sum(sent) == 4
    assert throttle.should_send(1.0, 100, 100)  # 100% always goes
    rows = [("a", "upload", "in_progress"), ("b", "download", "error"), ("c", "upload", "done")]
    assert stale_on_open(rows) == [("a", "upload"), ("b", "download")]


def test_a_held_key_stays_queued_and_sets_no_deadline() -> None:
    # Files with the same contents as one moving now wait for it (not for a timer).
    queue = TransferQueue(2, RetryPolicy())
    queue.add("same")
    queue.add("other", ready_at=5.0)
    held = {"same"}.__contains__
    assert queue.next_ready(0.0, held=held) is None
    assert queue.next_deadline(held=held) == 5.0
    assert queue.next_ready(0.0) == "same"
    assert queue.next_ready(5.0, held=held) == "other"
    assert "same" in queue and queue.ready_count(0.0) == 1


def test_a_key_queued_again_before_its_worker_released_it_waits_for_that() -> None:
    # The worker has decided (succeeded) but still writes its outcome down when the key
    # is queued again: it must not start in a second worker until released.
    queue = TransferQueue(2, RetryPolicy())
    queue.add("a")
    queue.start("a")
    queue.succeeded("a")
    assert queue.add("a")
    assert queue.next_ready(0) is None and queue.next_deadline() is None
    assert queue.ready_count(0) == 0 and queue.busy == 1
    queue.released("a")
    assert queue.next_ready(0) == "a" and queue.busy == 0


def test_a_pick_asks_held_only_about_keys_that_would_win() -> None:
    # Tried: 1,000 small files queued while one moves. Each pick asked held() about
    # every queued key (and held() stat'ed each blob): picks were quadratic, and the
    # uploads ran at 20 files/s, bound by the event loop.
    queue = TransferQueue(2, RetryPolicy())
    for number in range(1000):
        queue.add(f"k{number}")
    queue.add("urgent", priority=True)
    asked: list[str] = []

    def held(key: str) -> bool:
        asked.append(key)
        return key in ("urgent", "k0")

    assert queue.next_ready(0.0, held=held) == "k1"
    assert asked == ["k0", "k1", "urgent"]


def test_a_worker_keeps_its_connection_after_a_success_or_a_clean_refusal_only() -> None:
    assert keeps_connection(cancelled=False, failed=False, refused_at_begin=False)
    # Refused in answer to the first message: that conversation ended cleanly.
    assert keeps_connection(cancelled=False, failed=True, refused_at_begin=True)
    # Any other failure, or a cancel, leaves the conversation where nobody knows.
    assert not keeps_connection(cancelled=False, failed=True, refused_at_begin=False)
    assert not keeps_connection(cancelled=True, failed=False, refused_at_begin=False)
    assert not keeps_connection(cancelled=True, failed=True, refused_at_begin=True)


def test_only_a_reused_connection_found_closed_runs_the_attempt_again() -> None:
    assert runs_again_on_new_connection(reused=True, connection_lost=True)
    # A new connection that fails is a real failure: at most one run again.
    assert not runs_again_on_new_connection(reused=False, connection_lost=True)
    # A server's verdict on a kept connection is the transfer's own failure.
    assert not runs_again_on_new_connection(reused=True, connection_lost=False)


def test_an_idle_connection_closes_keep_seconds_after_its_last_transfer_or_when_offline() -> None:
    assert idle_connection_closes_at(10.0, 2.0, online=True) == 12.0
    assert idle_connection_closes_at(10.0, 2.0, online=False) == 10.0  # at once
    assert idle_connection_closes_at(10.0, 0.0, online=True) == 10.0  # keep=0: never kept


def test_describe_tells_what_each_key_waits_for() -> None:
    queue = TransferQueue(1, RetryPolicy(base=1.0, cap=60.0))
    queue.add("a")
    queue.add("b", priority=True)
    queue.start("b")
    queue.failed("b", now=10.0, jitter=0.5)  # backs off 0.75 s; waiting again, still busy
    assert queue.describe(now=10.0) == {
        "waiting": [
            {"key": "a", "priority": False, "failures": 0, "ready_in": 0.0},
            {"key": "b", "priority": True, "failures": 1, "ready_in": 0.75},
        ],
        "in_flight": [],
        "busy": ["b"],
    }
    queue.released("b")
    queue.start("a")
    assert queue.describe(now=12.5)["in_flight"] == ["a"]
    assert queue.describe(now=12.5)["busy"] == ["a"]


def test_a_key_asked_for_while_in_flight_is_queued_afresh_unless_discarded_since() -> None:
    queue = TransferQueue(1, RetryPolicy())
    queue.add("a")
    queue.start("a")
    assert not queue.add("a", priority=True)  # in flight: noted, not queued
    assert queue.queued == 0
    queue.succeeded("a")
    assert queue.asked_again("a") is True  # with the priority asked
    assert queue.asked_again("a") is None  # taken
    # Stopped with nobody asking since (a delete): not asked again.
    queue.released("a")
    queue.add("a")
    queue.start("a")
    queue.add("a")
    queue.discard("a")  # cancel(): what was asked before it is for the old contents
    queue.succeeded("a")
    assert queue.asked_again("a") is None


def test_a_request_made_during_an_attempt_is_answered_by_its_verdict() -> None:
    queue = TransferQueue(1, RetryPolicy())
    queue.add("a")
    queue.start("a")
    queue.add("a", priority=True)
    retry_at = queue.failed("a", now=0.0, jitter=0.5)
    assert retry_at is not None  # waits out the backoff, with the priority asked
    assert queue.describe(now=0.0)["waiting"] == [
        {"key": "a", "priority": True, "failures": 1, "ready_in": retry_at}
    ]
    assert queue.asked_again("a") is None
    queue.released("a")
    queue.start("a")
    queue.add("a")
    assert queue.failed("a", now=0.0, jitter=0.5, retryable=False) is None  # given up
    assert queue.asked_again("a") is None and queue.queued == 0


def test_a_key_stopped_while_in_flight_whose_worker_died_is_queued_only_on_request() -> None:
    # Tried (a helper's review): a worker died (a full disk) after its transfer had been
    # stopped for a deleted file: released() queued the stopped transfer again, and
    # another worker uploaded the deleted file's contents.
    queue = TransferQueue(2, RetryPolicy())
    queue.add("a")
    queue.start("a")
    queue.discard("a")  # cancel(): the file was deleted
    queue.released("a")  # the worker died before its outcome
    assert queue.queued == 0
    # Stopped for new contents, asked for again: a new transfer, no old failures.
    queue.add("b")
    queue.start("b")
    assert queue.failed("b", now=0.0, jitter=0.5) is not None  # one failure so far
    queue.released("b")
    assert queue.next_ready(10.0) == "b"
    queue.start("b")
    queue.discard("b")  # cancel(): new contents
    queue.add("b", priority=True)  # asked for them (a read)
    queue.released("b")  # the worker died before its outcome
    assert queue.describe(now=10.0)["waiting"] == [
        {"key": "b", "priority": True, "failures": 0, "ready_in": 0.0}
    ]


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: FileOptions(uploads=0), "uploads must be a positive integer, got 0"),
        (lambda: FileOptions(downloads=-1), "downloads must be a positive integer"),
        (lambda: FileOptions(uploads="2"), "uploads must be a positive integer, got '2'"),
        (lambda: FileOptions(transfer_timeout=0), "transfer_timeout must be a finite number > 0"),
        (lambda: FileOptions(transfer_timeout=math.nan), "transfer_timeout must be a finite"),
        (
            lambda: FileOptions(progress_interval=-1),
            "progress_interval must be a finite number >= 0",
        ),
        (lambda: RetryPolicy(base=-1), "base must be a finite number > 0, got -1"),
        (lambda: RetryPolicy(base=0), "base must be a finite number > 0, got 0"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts must be a positive integer, got 0"),
        (lambda: RetryPolicy(cap=0.001, base=10), r"cap \(0.001\) must be at least base \(10\)"),
        (lambda: FileOptions(keep_connection="1"), "keep_connection must be a finite number"),
    ],
)
def test_nonsense_settings_are_refused_when_made(make: Callable[[], object], what: str) -> None:
    # Tried (a hostile review): FileOptions(transfer_timeout=0) was taken, and every
    # transfer then failed "no answer within 0s", for ever; uploads=0 failed only at
    # open_client, with a message that did not name the setting.
    with pytest.raises(ValueError, match=what):
        make()


def test_settings_of_the_wrong_kind_are_refused_when_made() -> None:
    with pytest.raises(TypeError, match="'retry' must be <class"):
        FileOptions(retry="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'pacing' must be <class"):
        FileOptions(pacing="x")  # type: ignore[arg-type]
    assert FileOptions(pacing=None).pacing is None  # no pacing: allowed
