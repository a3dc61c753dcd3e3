"""A small todo list on trio_sync: its state is folded from events.

Four events change the list: ``todo.created`` (id, title), ``todo.renamed`` (id, title),
``todo.completed`` (id) and ``todo.deleted`` (id). Every device commits its edits locally
(online or not) and trio_sync gives every event one place in the log; folding the log *in
log order* gives every device the same list.

:class:`TodoApp` is the application a device runs: it follows the confirmed log as it
arrives (in log order) and shows that list with its own pending edits on top.
:class:`ArrivalOrderTodoApp` is the same application with a classic bug: it keeps one list
and changes it as things happen (its own edits at once, everyone else's when they arrive),
so two devices that renamed the same item at the same time end up showing different
titles. ``examples.todo.simulation`` finds that bug by seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from trio_sync import Client, Event

#: Titles the simulated users type.
WORDS = ("milk", "bread", "eggs", "tea", "rice", "soap", "stamps", "bulbs", "tape", "jam")


@dataclass(frozen=True)
class Todo:
    """One item of the list."""

    id: str
    title: str
    done: bool = False


class TodoList:
    """The list folded from events."""

    def __init__(self) -> None:
        self.items: dict[str, Todo] = {}

    @classmethod
    def fold(cls, events: list[Event]) -> TodoList:
        """The list after ``events``, applied in the order given."""
        todo = cls()
        for event in events:
            todo.apply(event)
        return todo

    def copy(self) -> TodoList:
        other = TodoList()
        other.items = dict(self.items)
        return other

    def apply(self, event: Event) -> None:
        """Applies one event. Edits of an item that does not exist (deleted, or not yet
        seen) change nothing."""
        item_id = str(event.args["id"])
        item = self.items.get(item_id)
        if event.name == "todo.created" and item is None:
            self.items[item_id] = Todo(item_id, str(event.args["title"]))
        elif event.name == "todo.renamed" and item is not None:
            self.items[item_id] = replace(item, title=str(event.args["title"]))
        elif event.name == "todo.completed" and item is not None:
            self.items[item_id] = replace(item, done=True)
        elif event.name == "todo.deleted":
            self.items.pop(item_id, None)

    def shown(self) -> list[Todo]:
        """What the screen shows: the items sorted by id."""
        return sorted(self.items.values(), key=lambda item: item.id)


class TodoApp:
    """The todo application of one device, on its trio_sync client.

    Run :meth:`follow` as a task: it folds the confirmed log as it arrives.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.confirmed = TodoList()

    async def follow(self) -> None:
        """Folds every confirmed event, in log order, as it arrives (for ever)."""
        async for event in self.client.confirmed_stream(after=0):
            self.confirmed.apply(event)

    def shown(self) -> list[Todo]:
        """The confirmed list with this device's pending edits on top."""
        view = self.confirmed.copy()
        for event in self.client.pending_events():
            view.apply(event)
        return view.shown()

    # --- what the user does -----------------------------------------------------------

    def own_edits(self) -> int:
        """How many edits this device has made (its store knows, across restarts)."""
        me = self.client.client_id
        confirmed = sum(1 for e in self.client.confirmed_events() if e.client_id == me)
        return confirmed + len(self.client.pending_events())

    async def edit(self, name: str, args: dict[str, object]) -> Event:
        return await self.client.commit(name, args)

    async def random_edit(self, rng: random.Random) -> Event:
        """Creates, renames, completes or deletes an item, the way a person might."""
        items = self.shown()
        roll = rng.random()
        if not items or roll < 0.3:
            item_id = f"{self.client.client_id}-{self.own_edits() + 1}"
            return await self.edit("todo.created", {"id": item_id, "title": rng.choice(WORDS)})
        item = rng.choice(items)
        if roll < 0.75:
            title = f"{rng.choice(WORDS)} x{rng.randint(2, 9)}"
            return await self.edit("todo.renamed", {"id": item.id, "title": title})
        if roll < 0.92:
            return await self.edit("todo.completed", {"id": item.id})
        return await self.edit("todo.deleted", {"id": item.id})


class ArrivalOrderTodoApp(TodoApp):
    """The bug: one list, changed as things happen instead of folded in log order.

    Its own edits are applied when made, everyone else's when they arrive. Two devices
    that rename one item at the same time each apply the other's rename last, so each
    shows the other's title, while the log (and every correct device) says one of them.
    """

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        # On start-up it folds what the store holds, in log order: that part is right.
        self.state = TodoList.fold(client.confirmed_events() + client.pending_events())
        self._start = client.status.upstream_head

    async def follow(self) -> None:
        async for event in self.client.confirmed_stream(after=self._start):
            if event.client_id != self.client.client_id:  # own edits are applied already
                self.state.apply(event)

    async def edit(self, name: str, args: dict[str, object]) -> Event:
        event = await super().edit(name, args)
        self.state.apply(event)
        return event

    def shown(self) -> list[Todo]:
        return self.state.shown()
