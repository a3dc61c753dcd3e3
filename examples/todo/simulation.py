"""The todo list under the simulator: several devices editing, online and offline, under
faults; at the end, every device must show the same list.

Run it::

    python -m examples.todo                        # seeds of both apps, a bug found
    trio-sync replay --seed 3 --workload examples.todo.simulation:workload \\
        --invariant examples.todo.simulation:same_list_everywhere
    trio-sync replay --seed 0 --workload examples.todo.simulation:arrival_order_workload \\
        --invariant examples.todo.simulation:same_list_everywhere --shrink

The workload's parameters (``--param devices=2``, ``--param edits=5``,
``--param outages=0``) shrink: a failing seed is reduced to the fewest devices, edits and
faults that still fail.
"""

from __future__ import annotations

import trio

from trio_sync.testing import Device, World

from .app import ArrivalOrderTodoApp, Todo, TodoApp, TodoList

DEVICE_NAMES = ("phone", "laptop", "tablet", "desktop", "watch")


async def use_the_app(device: Device, world: World, app_class: type[TodoApp], edits: int) -> None:
    """One device's user: opens the app and makes ``edits`` edits with pauses between.

    Runs again after a crash, on what the store kept: the app folds it, and the user
    carries on from the edits already made.
    """
    assert device.client is not None
    app = device.app = app_class(device.client)
    device.start_soon(app.follow)
    while app.own_edits() < edits:
        event = await app.random_edit(world.random)
        world.trace("todo.edit", actor=device.name, event=event.name, id=event.args["id"])
        await trio.sleep(world.random.uniform(0.05, 0.6))


async def workload(world: World, app_class: type[TodoApp] = TodoApp) -> int:
    """Devices edit the list while, in each of ``outages`` rounds, one of them goes
    offline for a while, an ack is lost, the server restarts and a device crashes (on top
    of the seeded background faults). Returns how many edits the devices made."""
    devices = world.param("devices", 3, minimum=1)
    edits = world.param("edits", 12, minimum=1)
    outages = world.param("outages", 1, minimum=0)
    names = DEVICE_NAMES[:devices]
    for name in names:
        world.start_device(name, use_the_app, world, app_class, edits)

    for _ in range(outages):
        await trio.sleep(world.random.uniform(0.2, 1.0))
        world.partition([world.random.choice(names)])  # into a tunnel, editing on
        await trio.sleep(world.random.uniform(0.5, 3.0))
        world.lose_next_ack(world.random.choice(names))
        world.heal()
        await trio.sleep(world.random.uniform(0.0, 1.0))
        await world.restart_server()
        world.crash(world.random.choice(names))  # mid-edit or mid-write, whatever it was doing
    return devices * edits


async def arrival_order_workload(world: World) -> int:
    """The same workload, with the application's arrival-order bug."""
    return await workload(world, ArrivalOrderTodoApp)


def same_list_everywhere(world: World) -> None:
    """Every device shows the same list, and it is the log folded in log order."""
    missing = sorted(set(world.devices) - set(world.apps))
    assert not missing, f"devices without a running app at the end: {missing}"
    shown = {name: app.shown() for name, app in world.apps.items()}
    client = next(iter(world.clients.values()))
    expected = TodoList.fold(client.confirmed_events()).shown()
    wrong = {name: items for name, items in shown.items() if items != expected}
    if wrong:
        lines = [f"{len(wrong)} of {len(shown)} devices show another list than the log's:"]
        lines.append(f"  the log says: {_describe(expected)}")
        lines += [f"  {name} shows:  {_describe(items)}" for name, items in wrong.items()]
        raise AssertionError("\n".join(lines))


def _describe(items: list[Todo]) -> str:
    return "; ".join(f"{item.id}={item.title}{' (done)' if item.done else ''}" for item in items)
