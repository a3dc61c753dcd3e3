"""A world under Trio's MockClock (autojump): the in-memory transport, inline stores, a
server, clients whose trace steps are recorded with their virtual times. No threads, no
sockets: exact virtual times can be asserted."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

import trio_sync
from trio_sync import ClientTimings, HeartbeatTimings, PushTimings
from trio_sync._store_runner import inline
from trio_sync.protocol import Message
from trio_sync.server import serve_store
from trio_sync.store import MEMORY, ServerStore
from trio_sync.transport import MemoryNetwork

TIMINGS = ClientTimings(
    connect_timeout=5.0,
    handshake_timeout=5.0,
    reconnect_base=1.0,
    reconnect_cap=8.0,
    heartbeat=HeartbeatTimings(interval=5.0, pong_timeout=10.0, stuck_ticks=2),
    # 12s, off the heartbeat's 5s grid: no two timers fire at the same virtual instant, so
    # no assertion depends on Trio's scheduling order.
    # A floor equal to the cap: these tests assert the fixed timeout, not the measured one.
    push=PushTimings(
        ack_timeout=12.0, min_ack_timeout=12.0, retry_base=1.0, retry_cap=8.0, catch_up_timeout=5.0
    ),
)


def _keep(message: Message) -> bool:
    return False


class World:
    """A memory network with one server; records every client trace step with its time."""

    def __init__(self, nursery: trio.Nursery) -> None:
        #: Per client: which of the server's messages to it are lost.
        self.drops: dict[str, Callable[[Message], bool]] = {}
        self.network = MemoryNetwork(
            loses=lambda client_id, message: self.drops.get(client_id, _keep)(message)
        )
        self.nursery = nursery
        self.trace: list[tuple[float, str, str, dict[str, object]]] = []
        self.url = ""

    async def start_server(self, **options: Any) -> ServerStore:
        """Starts the server (any option of ``serve_store``); returns its store."""
        self.store = ServerStore.open(MEMORY)
        options.setdefault("run_store", inline)
        self.url = await self.nursery.start(
            partial(
                serve_store,
                self.store,
                partial(self.network.serve, name="server"),
                **options,
            )
        )
        return self.store

    def client(
        self, client_id: str, drop: Callable[[Message], bool] | None = None, **kwargs: Any
    ) -> Any:
        if drop is not None:
            self.drops[client_id] = drop

        def record(what: str, details: Any) -> None:
            self.trace.append((trio.current_time(), client_id, what, dict(details)))

        kwargs.setdefault("timings", TIMINGS)
        return trio_sync.open_client(
            self.url or "memory://server",
            MEMORY,
            client_id=client_id,
            connector=partial(self.network.connect, client_id=client_id),
            run_store=inline,
            rng=random.Random(client_id),
            trace=record,
            **kwargs,
        )

    def times(self, client_id: str, what: str) -> list[float]:
        return [t for t, c, w, _ in self.trace if c == client_id and w == what]


def drop_first(kind: type, count: int = 1) -> Callable[[Message], bool]:
    dropped = 0

    def drop(message: Message) -> bool:
        nonlocal dropped
        if isinstance(message, kind) and dropped < count:
            dropped += 1
            return True
        return False

    return drop
