"""Worker threads are refused inside a simulation (and only there); everything the
simulator changes in Trio is put back, and a Trio program in another thread is left alone."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.lowlevel

from trio_sync._store_runner import in_worker_thread
from trio_sync.testing import SimulationError, World, run_scenario, run_simulation


async def uses(world: World) -> None:
    what = world.param("what", "to_thread")
    if what == "to_thread":
        await trio.to_thread.run_sync(lambda: None)
    elif what == "lowlevel":
        trio.lowlevel.start_thread_soon(lambda: None, lambda outcome: None)
    elif what == "store_in_a_thread":
        async with world.open_client("A", run_store=in_worker_thread):
            pass
    elif what == "trio_path":
        await trio.Path(".").exists()  # Trio runs that in a worker thread too
    elif what == "nested":
        run_simulation(1, uses, what="nothing")


@pytest.mark.parametrize(
    ("what", "named"),
    [
        ("to_thread", "trio.to_thread.run_sync"),
        ("lowlevel", "trio.lowlevel.start_thread_soon"),
        ("store_in_a_thread", "trio.to_thread.run_sync"),
        ("trio_path", "trio.to_thread.run_sync"),
    ],
)
def test_a_worker_thread_inside_a_simulation_is_refused_clearly(what: str, named: str) -> None:
    with pytest.raises(SimulationError) as caught:
        run_simulation(1, uses, what=what)
    message = str(caught.value)
    assert f"{named} was called inside a simulation" in message
    assert "virtual time" in message and "run_store=inline" in message


def test_a_simulation_inside_a_simulation_is_refused() -> None:
    with pytest.raises(SimulationError, match="already running in this thread"):
        run_simulation(1, uses, what="nested")


def test_everything_is_put_back_even_after_a_refusal() -> None:
    from trio import _threads
    from trio._core import _run

    before = (
        _run._ALLOW_DETERMINISTIC_SCHEDULING,
        _run._r,
        _run._r.getstate(),
        trio.to_thread.run_sync,
        trio.lowlevel.start_thread_soon,
        _threads.start_thread_soon,  # type: ignore[attr-defined]
    )
    with pytest.raises(SimulationError):
        run_simulation(1, uses, what="to_thread")
    run_scenario(5, events=3)
    after = (
        _run._ALLOW_DETERMINISTIC_SCHEDULING,
        _run._r,
        _run._r.getstate(),
        trio.to_thread.run_sync,
        trio.lowlevel.start_thread_soon,
        _threads.start_thread_soon,  # type: ignore[attr-defined]
    )
    assert after == before
    assert trio.run(trio.to_thread.run_sync, lambda: 42) == 42


def test_a_trio_program_in_another_thread_is_not_disturbed() -> None:
    # While a simulation runs here, another thread runs Trio with worker threads and a
    # busy scheduler: its threads work, and the simulation's trace is the same as when
    # it ran alone (the other thread's scheduling draws nothing from the seeded source).
    alone = run_scenario(2)
    results: list[Any] = []
    started = threading.Event()
    stop = threading.Event()

    async def busy() -> int:
        calls = 0
        started.set()
        while not stop.is_set():
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(trio.sleep, 0)
            calls += await trio.to_thread.run_sync(lambda: 1)
        return calls

    def other() -> None:
        try:
            results.append(trio.run(busy))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(10)
    try:
        together = run_scenario(2)
    finally:
        stop.set()
        thread.join(30)
    assert isinstance(results[0], int) and results[0] > 0, results
    assert together.trace_digest == alone.trace_digest
