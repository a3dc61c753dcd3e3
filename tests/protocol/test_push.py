"""The push machines: the supervised policy never parks; the legacy one parks on advance."""

from __future__ import annotations

import pytest

from trio_sync.protocol import (
    Event,
    ParkingPush,
    PushTimings,
    SendPush,
    Sleep,
    SupervisedPush,
    SyncState,
    make_push_machine,
)

# A floor equal to the cap: these tests are about the fixed timeout, not the measured one.
TIMINGS = PushTimings(
    ack_timeout=10.0, min_ack_timeout=10.0, retry_base=1.0, retry_cap=8.0, catch_up_timeout=5.0
)


def state_with(n: int) -> SyncState:
    state = SyncState("A")
    for i in range(n):
        state.commit("x", {"i": i})
    return state


def send(machine: object, state: SyncState, now: float = 0.0) -> SendPush:
    action = machine.poll(state, now)  # type: ignore[attr-defined]
    assert isinstance(action, SendPush), action
    return action


def test_a_trickle_goes_one_push_at_a_time_until_acknowledged() -> None:
    # Fewer events than a batch behind the push in flight: they wait (and may fill up).
    state, machine = state_with(3), SupervisedPush(2, TIMINGS)
    first = send(machine, state).push
    assert [e.client_seq for e in first.events] == [1, 2] and first.parent == 0
    assert machine.poll(state, 1.0) == Sleep(10.0)  # [3] is no full batch: the ack timeout
    state.acknowledge(1, 2)
    machine.on_ack(first.push_id, 1.0)
    second = send(machine, state).push
    assert [e.client_seq for e in second.events] == [3]


def test_a_backlog_is_pipelined_up_to_the_window() -> None:
    state, machine = state_with(20), SupervisedPush(2, TIMINGS)
    pushes = [send(machine, state, now=0.1 * i).push for i in range(4)]
    assert [[e.client_seq for e in p.events] for p in pushes] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert {p.parent for p in pushes} == {0}  # the server takes own events after a parent
    assert machine.poll(state, 0.5) == Sleep(10.0)  # the window is full: the oldest's timeout
    state.acknowledge(1, 2)
    machine.on_ack(pushes[0].push_id, 0.6)
    assert machine.deadline == pytest.approx(10.1)  # now the second push's own timeout
    fifth = send(machine, state, 0.7).push
    assert [e.client_seq for e in fifth.events] == [9, 10]


def test_an_ack_answers_the_pushes_before_it_whose_acks_were_lost() -> None:
    state, machine = state_with(6), SupervisedPush(2, TIMINGS)
    _first, second, third = (send(machine, state).push for _ in range(3))
    state.acknowledge(1, 4)
    machine.on_ack(second.push_id, 1.0)  # the first push's ack was lost
    assert machine.in_flight == [third]
    state.acknowledge(5, 2)
    machine.on_ack(third.push_id, 1.5)
    assert machine.phase == "ready" and machine.in_flight == []


def test_pushes_after_one_that_met_server_ahead_are_void() -> None:
    state, machine = state_with(6), SupervisedPush(2, TIMINGS)
    first, second = send(machine, state).push, send(machine, state).push
    machine.on_server_ahead(first.push_id, 9, state, 1.0, jitter=0.0)
    assert machine.phase == "catching_up"
    # The server then refuses the second for a client_seq gap: a consequence, not news.
    assert machine.on_rejected(second.push_id, "client_seq gap", 1.1, jitter=0.0) is False
    assert machine.phase == "catching_up" and machine.failures == 0
    # A refusal of a push that was no consequence is news.
    third_state = state_with(1)
    other = SupervisedPush(2, TIMINGS)
    lone = send(other, third_state).push
    assert other.on_rejected(lone.push_id, "differs", 1.0, jitter=0.0) is True
    assert other.phase == "backoff"


def test_a_timeout_gives_up_on_every_push_in_flight() -> None:
    state, machine = state_with(6), SupervisedPush(2, TIMINGS)
    first, second = send(machine, state).push, send(machine, state, 1.0).push
    machine.on_deadline(10.0, jitter=0.0)
    assert machine.phase == "backoff" and machine.in_flight == []
    assert f"no answer to push {first.push_id}" in (machine.last_error or "")
    # A late ack of either ends the backoff at once: the connection works, only slowly.
    state.acknowledge(1, 4)
    machine.on_ack(second.push_id, 10.2)
    assert machine.phase == "ready" and machine.failures == 0


def test_the_legacy_policy_pushes_one_at_a_time() -> None:
    state, machine = state_with(20), ParkingPush(2, TIMINGS)
    send(machine, state)
    assert machine.poll(state, 0.1) == Sleep(10.0)


def test_nothing_to_push_sleeps_until_woken() -> None:
    assert SupervisedPush(2, TIMINGS).poll(SyncState("A"), 0.0) == Sleep(None)


def test_supervised_retries_a_lost_ack_after_a_jittered_backoff() -> None:
    state, machine = state_with(1), SupervisedPush(10, TIMINGS)
    first = send(machine, state).push
    machine.on_deadline(10.0, jitter=0.0)
    assert machine.phase == "backoff" and machine.deadline == 10.5  # base 1.0, half step
    assert "no answer" in (machine.last_error or "")
    machine.on_deadline(10.5, jitter=0.0)
    again = send(machine, state, 10.5).push
    assert again.events == first.events and again.push_id != first.push_id


def test_backoff_grows_and_is_capped() -> None:
    state, machine = state_with(1), SupervisedPush(10, TIMINGS)
    deadlines = []
    now = 0.0
    for _ in range(6):
        send(machine, state, now)
        now += 10.0
        machine.on_deadline(now, jitter=0.999999)
        deadlines.append(round(machine.deadline - now, 3))  # type: ignore[operator]
        now = machine.deadline  # type: ignore[assignment]
        machine.on_deadline(now, jitter=0.0)
    assert deadlines == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_supervised_restarts_on_advance_during_backoff() -> None:
    state, machine = state_with(3), SupervisedPush(1, TIMINGS)
    send(machine, state)
    machine.on_deadline(10.0, jitter=0.5)
    machine.on_upstream_change("advance", state)
    assert isinstance(machine.poll(state, 10.0), SendPush)


def test_parking_policy_parks_and_ignores_advances() -> None:
    state, machine = state_with(3), ParkingPush(1, TIMINGS)
    send(machine, state)
    machine.on_deadline(10.0, jitter=0.5)
    assert machine.phase == "parked" and machine.poll(state, 99.0) == Sleep(None)
    state.merge([Event("x", {"i": 0}, "A", 1, 1)])  # our own event echoed: an advance
    machine.on_upstream_change("advance", state)
    machine.on_kick()
    assert machine.poll(state, 100.0) == Sleep(None)  # the LiveStore stall
    assert machine.is_stuck(state)
    machine.on_upstream_change("rebase", state)
    assert isinstance(machine.poll(state, 100.0), SendPush)


def test_supervised_server_ahead_waits_for_the_pull_then_pushes_from_the_new_head() -> None:
    state, machine = state_with(1), SupervisedPush(10, TIMINGS)
    push = send(machine, state).push
    machine.on_server_ahead(push.push_id, 4, state, 1.0, 0.0)
    assert machine.phase == "catching_up" and machine.poll(state, 1.0) == Sleep(6.0)
    state.merge([Event("y", {}, "B", i, i) for i in range(1, 5)])
    machine.on_upstream_change("rebase", state)
    assert send(machine, state, 2.0).push.parent == 4


def test_server_ahead_already_caught_up_pushes_at_once() -> None:
    state, machine = state_with(1), SupervisedPush(10, TIMINGS)
    push = send(machine, state).push
    state.merge([Event("y", {}, "B", 1, 1)])
    machine.on_server_ahead(push.push_id, 1, state, 1.0, 0.0)
    assert send(machine, state, 1.0).push.parent == 1


def test_catch_up_that_never_comes_times_out_into_a_push() -> None:
    state, machine = state_with(1), SupervisedPush(10, TIMINGS)
    push = send(machine, state).push
    machine.on_server_ahead(push.push_id, 4, state, 1.0, 0.0)
    machine.on_deadline(6.0, jitter=0.0)
    assert isinstance(machine.poll(state, 6.0), SendPush)


def test_parking_policy_parks_on_server_ahead_without_catch_up() -> None:
    state, machine = state_with(1), ParkingPush(10, TIMINGS)
    push = send(machine, state).push
    machine.on_server_ahead(push.push_id, 4, state, 1.0, 0.0)
    assert machine.phase == "parked"


def test_answers_to_an_older_push_do_not_disturb_the_current_one() -> None:
    state, machine = state_with(2), SupervisedPush(1, TIMINGS)
    push = send(machine, state).push
    machine.on_ack(push.push_id + 7, 1.0)
    machine.on_rejected(push.push_id + 7, "old", 1.0, 0.0)
    assert machine.phase == "in_flight"


def test_rejection_backs_off_under_supervision() -> None:
    state, machine = state_with(1), SupervisedPush(1, TIMINGS)
    push = send(machine, state).push
    machine.on_rejected(push.push_id, "gap", 1.0, 0.0)
    assert machine.phase == "backoff" and "gap" in (machine.last_error or "")


def test_new_connection_forgets_the_push_in_flight() -> None:
    state, machine = state_with(1), ParkingPush(1, TIMINGS)
    send(machine, state)
    machine.on_deadline(10.0, 0.0)
    machine.on_connected()
    assert isinstance(machine.poll(state, 11.0), SendPush)


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown push_policy 'yolo'"):
        make_push_machine("yolo", 10)
    with pytest.raises(ValueError, match="at least 1"):
        make_push_machine("park", 0)


def test_supervised_takes_the_echo_of_its_push_as_its_ack() -> None:
    state, machine = state_with(3), SupervisedPush(2, TIMINGS)
    push = send(machine, state).push
    state.merge([e.at(i + 1) for i, e in enumerate(push.events)])  # echo, but no ack
    machine.on_upstream_change("advance", state)
    follow = send(machine, state, 0.5).push
    assert [e.client_seq for e in follow.events] == [3] and follow.parent == 2


def test_supervised_keeps_waiting_while_its_push_is_unconfirmed() -> None:
    state, machine = state_with(3), SupervisedPush(2, TIMINGS)
    send(machine, state)
    state.merge([Event("y", {}, "B", 1, 1)])
    machine.on_upstream_change("rebase", state)
    assert machine.phase == "in_flight" and machine.poll(state, 1.0) == Sleep(10.0)


def test_the_ack_timeout_follows_measured_round_trips_within_floor_and_cap() -> None:
    timings = PushTimings(ack_timeout=10.0, min_ack_timeout=0.2, retry_base=1.0, retry_cap=8.0)
    state, machine = state_with(5), SupervisedPush(1, timings)
    first = send(machine, state, 0.0).push
    assert machine.deadline == 10.0  # nothing measured yet: the cap
    machine.on_ack(first.push_id, 0.05)  # a 50 ms round trip
    state.acknowledge(1, 1)
    send(machine, state, 1.0)
    # 50 ms smoothed, 25 ms variation: 50 + 4 * 25 = 150 ms, below the 200 ms floor.
    assert machine.deadline == pytest.approx(1.2)
    machine.on_deadline(1.2, jitter=0.0)
    assert machine.last_error == "no answer to push 2 within 0.2s"


def test_answers_of_every_kind_measure_the_round_trip() -> None:
    timings = PushTimings(ack_timeout=10.0, min_ack_timeout=0.01)
    state, machine = state_with(3), SupervisedPush(1, timings)
    push = send(machine, state, 0.0).push
    machine.on_server_ahead(push.push_id, 0, state, 1.0, 0.0)  # a 1 s round trip
    assert machine.round_trip.smoothed == 1.0
    push = send(machine, state, 2.0).push
    machine.on_rejected(push.push_id, "gap", 2.5, 0.0)
    assert machine.round_trip.smoothed == pytest.approx(0.9375)
