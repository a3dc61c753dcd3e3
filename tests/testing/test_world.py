"""run_simulation and the World a workload sees: devices, fault controls, parameters."""

from __future__ import annotations

import warnings

import pytest
import trio

from trio_sync.testing import Device, SimulationError, World, run_simulation

#: A clean network: these tests inject the faults they are about, and nothing else.
CLEAN = {
    "ack_loss": 0.0,
    "ack_delay": 0.0,
    "page_loss": 0.0,
    "disconnects": 0,
    "server_restarts": 0,
    "client_crashes": 0,
}


def whats(result: object, actor: str | None = None) -> list[str]:
    trace = result.trace  # type: ignore[attr-defined]
    return [r.what for r in trace if actor is None or r.actor == actor]


async def two_devices_share_a_log(world: World) -> list[str]:
    async with world.open_client("A") as a, world.open_client("B") as b:
        await a.commit("note", {"text": "from A"})
        await b.commit("note", {"text": "from B"})
        await world.wait_converged()
        assert a.confirmed_events() == b.confirmed_events()
        return [str(e.args["text"]) for e in a.confirmed_events()]


def test_a_workload_runs_real_clients_and_its_value_comes_back() -> None:
    result = run_simulation(1, two_devices_share_a_log, **CLEAN)
    assert result.ok and result.converged and result.failure is None
    assert sorted(result.value) == ["from A", "from B"]
    assert result.events_committed == 2 == len(result.server_log)
    assert result.logs == {"A": result.server_log, "B": result.server_log}
    assert result.online == ()  # both blocks had ended when the workload returned
    assert result.workload == "tests.testing.test_world:two_devices_share_a_log"
    assert result.replay_command.startswith(
        "trio-sync replay --seed 1 --workload tests.testing.test_world:two_devices_share_a_log"
    )


async def crash_and_reopen(world: World) -> tuple[list[int], list[int], int]:
    async def commit_for_ever(client: object) -> None:
        n = 0
        while True:
            await client.commit("tick", {"n": n})  # type: ignore[attr-defined]
            n += 1
            await trio.sleep(0.01)

    world.partition(["A"])  # nothing reaches the server: everything stays pending
    async with world.open_client("A") as a, trio.open_nursery() as nursery:
        nursery.start_soon(commit_for_ever, a)
        await trio.sleep(0.105)
        assert world.crash("A")
        await trio.sleep_forever()  # the crash ends this block, nursery and all
    assert not world.crash("A")  # not open any more
    device = world.devices["A"]
    kept = [e.client_seq for e in device.pending_events()]  # read from the store
    async with world.open_client("A") as again:
        pending = [e.client_seq for e in again.pending_events()]
    return kept, pending, device.crashes


def test_a_crash_tears_the_block_down_and_the_store_survives() -> None:
    result = run_simulation(2, crash_and_reopen, **CLEAN)
    kept, pending, crashes = result.value
    assert crashes == 1 and kept == pending == list(range(1, len(kept) + 1))
    assert len(kept) == 11  # commits at 0, 0.01, ... 0.10; the crash came at 0.105
    # Closed when the workload returned, A never got its events out: it is not online,
    # so the end does not wait for it; the result still shows what its store holds.
    assert result.ok and result.online == () and result.server_log == []
    assert [e.client_seq for e in result.pending["A"]] == kept
    assert "closed with pending events: A (11)" in result.report()
    assert whats(result, "A").count("open") == 2 and "crash" in whats(result, "A")


async def partitioned_then_healed(world: World) -> list[str]:
    async with world.open_client("A") as a, world.open_client("B") as b:
        world.partition(["B"])
        await b.commit("offline", {})
        await trio.sleep(3)
        seen = [b.status.state, str(b.status.last_error)]
        world.heal()
        await world.wait_converged()
        seen.append(str(len(a.confirmed_events())))
        return seen


def test_partition_keeps_a_device_away_until_heal() -> None:
    result = run_simulation(3, partitioned_then_healed, **CLEAN)
    state, error, a_has = result.value
    assert state == "disconnected" and "partitioned" in error and a_has == "1"
    steps = [(r.actor, r.what) for r in result.trace]
    assert ("net", "partition") in steps and ("net", "heal") in steps
    assert steps.index(("net", "heal")) < steps.index(("B", "push.send"))


async def legacy_stall(world: World) -> None:
    policy = world.param("policy", "supervised")
    async with world.open_client("A", push_policy=policy, push_batch_size=2) as a:
        world.lose_next_ack("A")
        for n in range(5):
            await a.commit("e", {"n": n})
        await a.wait_synced()  # under park: for ever


def test_lose_next_ack_reproduces_the_stall_under_park_only() -> None:
    parked = run_simulation(0, legacy_stall, policy="park", deadline=30, **CLEAN)
    assert parked.stalled and not parked.ok and parked.failure is not None
    assert "the workload had not returned by the deadline (t=30)" in parked.failure.message
    [stall] = parked.stall
    assert (stall.pending, stall.first_pending, stall.push_phase) == (3, 3, "parked")
    assert "A: 3 pending (client_seq 3..5)" in parked.report()
    assert len(parked.pending["A"]) == 3  # 3..5 never pushed again
    lost = [r.details for r in parked.trace if r.what == "lost.push_ack"]
    assert lost == [{"to": "A", "push_id": 1, "seqs": [1, 2]}]
    fixed = run_simulation(0, legacy_stall, policy="supervised", deadline=30, **CLEAN)
    assert fixed.ok and fixed.pending["A"] == [] and len(fixed.server_log) == 5


async def restart_in_the_middle(world: World) -> int:
    async with world.open_client("A") as a:
        await a.commit("before", {})
        await a.wait_synced()
        await world.restart_server(down_for=1.5)
        await a.commit("after", {})
        await a.wait_synced()
        return a.status.upstream_head


def test_restart_server_keeps_the_log_and_clients_reconnect() -> None:
    result = run_simulation(4, restart_in_the_middle, **CLEAN)
    assert result.ok and result.value == 2
    server = [(round(r.t, 4), r.what, dict(r.details)) for r in result.trace if r.actor == "server"]
    assert [what for _, what, _ in server] == ["up", "down", "up"]
    assert server[2][0] - server[1][0] == pytest.approx(1.5)
    assert server[1][2] == {"by": "workload"} and server[2][2] == {"head": 1}


async def draws(world: World) -> tuple[int, int, float]:
    return (
        world.param("devices", 3),
        world.param("size", draw=lambda r: r.randint(1, 10**6)),
        world.random.random(),
    )


def test_world_random_and_params_come_from_the_seed_and_pins() -> None:
    first, again = run_simulation(5, draws), run_simulation(5, draws)
    assert first.value == again.value and first.trace_digest == again.trace_digest
    assert first.value[0] == 3 and first.workload_params == {"devices": 3, "size": first.value[1]}
    other = run_simulation(6, draws)
    assert other.value[1:] != first.value[1:]
    pinned = run_simulation(5, draws, devices=2, size=7)
    assert pinned.value[:2] == (2, 7) and pinned.value[2] == first.value[2]
    assert "--param devices=2 --param size=7" in pinned.replay_command


def test_unknown_and_clashing_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown parameters \['colour'\]"):
        run_simulation(1, draws, colour="red")

    async def clash(world: World) -> None:
        world.param("latency", 1.0)

    result = run_simulation(1, clash)
    assert result.failure is not None and result.failure.kind == "error:TypeError"
    assert "world.params.latency" in result.failure.message

    async def neither(world: World) -> None:
        world.param("size")

    result = run_simulation(1, neither)
    assert result.failure is not None and "give a default or a draw" in result.failure.message


async def device_misuse(world: World) -> None:
    which = world.param("which", "double")
    if which == "double":
        async with world.open_client("A"), world.open_client("A"):
            pass
    elif which == "reserved":
        async with world.open_client("server"):
            pass
    elif which == "client_id":
        async with world.open_client("A", client_id="B"):
            pass


@pytest.mark.parametrize(
    ("which", "error", "match"),
    [
        ("double", SimulationError, "already open"),
        ("reserved", SimulationError, "cannot name a device"),
        ("client_id", TypeError, "the world decides"),
    ],
)
def test_device_misuse_is_refused_clearly(which: str, error: type, match: str) -> None:
    if error is SimulationError:
        with pytest.raises(SimulationError, match=match):
            run_simulation(1, device_misuse, which=which)
    else:
        result = run_simulation(1, device_misuse, which=which)
        assert result.failure is not None and match in result.failure.message


async def resuming_devices(world: World) -> None:
    async def main(device: Device) -> None:
        client = device.client
        assert client is not None
        device.app = {"incarnation": device.incarnation}
        mine = len(client.confirmed_events()) + len(client.pending_events())
        for n in range(mine, 20):
            await client.commit("n", {"n": n})
            await trio.sleep(0.05)

    world.start_device("P", main)
    await trio.sleep(0.42)
    assert world.crash("P")


def one_device_with_twenty_events(world: World) -> None:
    assert set(world.apps) == {"P"} and world.apps["P"]["incarnation"] == 2
    events = world.clients["P"].confirmed_events()
    assert [e.args["n"] for e in events] == list(range(20)), events


def test_start_device_restarts_main_after_a_crash_and_stays_online() -> None:
    result = run_simulation(7, resuming_devices, invariant=one_device_with_twenty_events, **CLEAN)
    assert result.ok, result.report()
    assert result.online == ("P",)
    steps = whats(result, "P")
    assert steps.index("crash") < steps.index("restart")
    restart = next(r for r in result.trace if r.what == "restart")
    crash = next(r for r in result.trace if r.what == "crash")
    assert 0.2 <= restart.t - crash.t <= 2.0


async def always_online(world: World) -> None:
    async def main(device: Device) -> None:
        client = device.client
        assert client is not None
        while (
            len(client.pending_events())
            + sum(1 for e in client.confirmed_events() if e.client_id == device.name)
            < 20
        ):
            await client.commit("n", {})
            await trio.sleep(0.1)

    for name in ("A", "B"):
        world.start_device(name, main)


def test_background_faults_hit_online_devices_and_runs_still_converge() -> None:
    result = run_simulation(
        11,
        always_online,
        ack_loss=0.3,
        page_loss=0.2,
        disconnects=3,
        client_crashes=2,
        server_restarts=2,
        fault_window=1.0,
    )
    assert result.ok, result.report()
    steps = [(r.actor, r.what) for r in result.trace]
    assert steps.count(("server", "down")) == 2
    # A fault planned while nobody is online (both crashed) does not happen, and says so.
    skipped = [dict(r.details)["fault"] for r in result.trace if r.what == "fault.skipped"]
    assert sum(1 for _, what in steps if what == "crash") + skipped.count("crash") == 2
    assert sum(1 for _, what in steps if what == "cut") + skipped.count("disconnect") == 3
    assert len(result.server_log) == 40


def test_the_server_speaks_the_schema_the_world_was_given() -> None:
    async def versions(world: World) -> tuple[str, str]:
        async with world.open_client("A") as good, world.open_client("B", schema_version=3) as bad:
            await good.wait_synced()
            await bad.wait_status(lambda status: status.state == "incompatible")
            return good.status.state, str(bad.status.last_error)

    result = run_simulation(1, versions, schema=("todo", 2), **CLEAN)
    state, error = result.value
    assert state == "synced" and "'todo' v3 does not match the server's 'todo' v2" in error


async def offline_edits(world: World) -> None:
    async with world.open_client("A") as a:
        world.partition(["A"])
        for n in range(5):
            await a.commit("edit", {"n": n})
            await trio.sleep(1)


def at_most_three_waiting(world: World) -> None:
    for name, client in world.clients.items():
        waiting = client.status.pending
        assert waiting <= 3, f"{name} holds {waiting} edits nobody has seen"


def test_a_step_invariant_stops_the_run_at_the_first_step_that_breaks_it() -> None:
    result = run_simulation(1, offline_edits, step_invariant=at_most_three_waiting, **CLEAN)
    assert not result.ok and result.failure is not None
    assert result.failure.kind == "step_invariant"
    assert result.failure.message.startswith(  # pytest's assertion rewriting adds more
        "after the step at t=3.0000: A commit\nA holds 4 edits nobody has seen"
    )
    assert result.virtual_seconds == 3.0 and result.trace.records[-1].what == "failed"
    report = result.report()
    assert report.startswith("seed 1: FAILED (step_invariant) at t=3.0000")
    assert "trace from the first fault (step" in report and "net      partition" in report
    assert report.endswith(
        "replay: trio-sync replay --seed 1 --workload tests.testing.test_world:offline_edits "
        "--step-invariant tests.testing.test_world:at_most_three_waiting "
        "--param ack_delay=0.0 --param ack_loss=0.0 --param client_crashes=0 "
        "--param disconnects=0 --param page_loss=0.0 --param server_restarts=0"
    )


async def async_invariant(world: World) -> None:
    raise AssertionError("this check never runs unless awaited")


class ReturnsACoroutine:
    """An invariant object whose call returns a coroutine: nothing marks it async."""

    def __call__(self, world: World) -> object:
        return async_invariant(world)


def test_an_async_invariant_is_refused_before_the_run() -> None:
    # What was tried: an ``async def`` invariant, and the same as a step invariant. Called
    # without await, its check never ran and every run passed.
    with pytest.raises(TypeError, match="async function: an invariant is a plain function"):
        run_simulation(1, two_devices_share_a_log, invariant=async_invariant, **CLEAN)
    with pytest.raises(TypeError, match="step_invariant 'async_invariant' is an async"):
        run_simulation(1, two_devices_share_a_log, step_invariant=async_invariant, **CLEAN)


def test_an_invariant_that_returns_a_coroutine_fails_the_run() -> None:
    # What was tried: a callable object (not a coroutine function) whose call returns a
    # coroutine: the run fails, says why, and leaves no "never awaited" warning behind.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_simulation(1, two_devices_share_a_log, invariant=ReturnsACoroutine(), **CLEAN)
        step = run_simulation(
            1, two_devices_share_a_log, step_invariant=ReturnsACoroutine(), **CLEAN
        )
    assert result.failure is not None and result.failure.kind == "invariant"
    assert "returned an awaitable instead of checking" in result.failure.message
    assert step.failure is not None and step.failure.kind == "step_invariant"
    assert "returned an awaitable instead of checking" in step.failure.message


async def raises(world: World) -> None:
    async with world.open_client("A") as a:
        await a.commit("edit", {})
        raise ValueError("the app lost its mind")


def test_an_exception_in_the_workload_is_a_failure_that_replays() -> None:
    result = run_simulation(3, raises, **CLEAN)
    assert result.failure is not None and result.failure.kind == "error:ValueError"
    assert "the workload raised:" in result.failure.message
    assert "ValueError: the app lost its mind" in result.report()
    failed = result.trace.records[-1]
    assert failed.details == {
        "kind": "error:ValueError",
        "why": "ValueError: the app lost its mind",
    }
    assert run_simulation(3, raises, **CLEAN).trace_digest == result.trace_digest


async def device_main_raises(world: World) -> None:
    async def main(device: Device) -> None:
        raise KeyError("no such item")

    world.start_device("A", main)


def test_an_exception_in_a_device_is_a_failure_too() -> None:
    result = run_simulation(3, device_main_raises, **CLEAN)
    assert result.failure is not None and result.failure.kind == "error:KeyError"
    assert "no such item" in result.failure.message


async def rebuilt_server_then_reset(world: World) -> dict[str, list[str]]:
    """Two devices sync, the server is rebuilt while A has offline work, both say
    "incompatible", and reset() brings them onto the new server with A's work kept."""
    from trio_sync import IncompatibleServer

    async with world.open_client("A") as a, world.open_client("B") as b:
        await a.commit("note", {"text": "old A"})
        await b.commit("note", {"text": "old B"})
        await world.wait_converged()
        world.partition(["A"])
        await a.commit("note", {"text": "offline A"})
        await world.rebuild_server()
        world.heal()
        for client in (a, b):
            with pytest.raises(IncompatibleServer, match="replaced"):
                await client.wait_synced()
            await client.reset(keep_pending=True)
        await b.commit("note", {"text": "new B"})
        await world.wait_converged()
        return {
            name: [str(e.args["text"]) for e in client.confirmed_events()]
            for name, client in (("A", a), ("B", b))
        }


#: Lost acks and pages, but no crash: a crash would end the workload's blocks early
#: (``world.open_client`` says so), and this is about the rebuild and the reset.
REBUILD_FAULTS = {"ack_loss": 0.1, "page_loss": 0.1, "client_crashes": 0}


@pytest.mark.parametrize("seed", range(5))
def test_a_rebuilt_server_is_survived_with_reset(seed: int) -> None:
    result = run_simulation(seed, rebuilt_server_then_reset, **REBUILD_FAULTS)
    assert result.converged, result.failure
    logs = result.value
    assert logs["A"] == logs["B"]
    assert sorted(logs["A"]) == ["new B", "offline A"]  # the old log went with the server
    assert "rebuilt" in str([r.details for r in result.trace if r.what == "down"])
    again = run_simulation(seed, rebuilt_server_then_reset, **REBUILD_FAULTS)
    assert again.trace_digest == result.trace_digest
