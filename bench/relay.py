"""The raw relay, the peer that shows what the transport alone costs.

A trio-websocket server that forwards every message it receives to every other connected
client, one message per event, and stores nothing: no log, no positions, no durability.
Each connection has its own outgoing queue and sender task, so one slow reader does not
hold up the others (and, unlike a real server, its queue may grow without bound).

Run on its own: ``python bench/relay.py [--host H] [--port P]`` prints
``relay at ws://H:P`` once it accepts connections (the same contract as
``trio-sync serve``), and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import math

import trio
import trio_websocket
from _common import raise_fd_limit, serve_until_signalled

#: Bigger than any frame the benchmarks send (a batch frame of 100 events is ~10 KB).
MAX_MESSAGE = 16 * 1024 * 1024


class _Peer:
    def __init__(self) -> None:
        self.outbox, self._inbox = trio.open_memory_channel[str | bytes](math.inf)

    async def send_all(self, ws: trio_websocket.WebSocketConnection) -> None:
        try:
            async for message in self._inbox:
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass  # the reader side notices too, and ends the connection


async def serve_relay(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs the relay until cancelled; ``nursery.start`` returns its ws:// URL."""
    peers: set[_Peer] = set()

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        # Registered before the handshake completes, so that a client whose connection
        # is open never misses a message (its queue holds them until it is accepted).
        me = _Peer()
        peers.add(me)
        try:
            ws = await request.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(me.send_all, ws)
                while True:
                    try:
                        message = await ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        break
                    for peer in peers:
                        if peer is not me:
                            peer.outbox.send_nowait(message)
                nursery.cancel_scope.cancel()
        finally:
            peers.discard(me)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handle,
                host,
                port,
                ssl_context=None,
                max_message_size=MAX_MESSAGE,
                task_status=task_status,
            )
        )
        task_status.started(f"ws://{host}:{server.port}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    raise_fd_limit()
    trio.run(serve_until_signalled, serve_relay, "relay", arguments.host, arguments.port)
