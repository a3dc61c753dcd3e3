"""File transfers under the deterministic simulator, with its faults (cut connections,
crashed devices, restarted server): the checker wants every device to end with every
live file's exact contents."""

from __future__ import annotations

import pytest

from trio_sync.testing import World, run_simulation


async def _files_workload(world: World) -> None:
    names = [f"d{i}" for i in range(world.param("devices", 3, minimum=1))]
    edits = world.param("edits", 6, minimum=1)

    async def main(device: object) -> None:
        name = device.name  # type: ignore[attr-defined]
        rng = world.random
        client = world.devices[name].client
        assert client is not None
        mine = [f.id for f in client.files.list() if not f.deleted and f.path.startswith(name)]
        for step in range(edits - len(mine)):
            size = rng.choice([0, 1, 1000, 70_000, 300_000])
            choice = rng.random()
            live = [f.id for f in client.files.list() if not f.deleted]
            if live and choice < 0.25:
                await client.files.update(rng.choice(live), rng.randbytes(size))
            elif live and choice < 0.35:
                await client.files.delete(rng.choice(live))
            else:
                await client.files.save(rng.randbytes(size), path=f"{name}/{step}")
            if rng.random() < 0.2:
                world.cut(name)

    for name in names:
        world.start_device(name, main)


@pytest.mark.parametrize("seed", range(6))
def test_simulated_file_sync_converges_with_exact_contents(seed: int) -> None:
    result = run_simulation(seed, _files_workload)
    assert result.failure is None, str(result.failure)
    assert result.converged


def test_simulated_file_sync_replays_exactly() -> None:
    first = run_simulation(3, _files_workload)
    again = run_simulation(3, _files_workload)
    assert first.trace_digest == again.trace_digest
