"""The stream watch: a pull stream that stopped delivering what the server is known to
hold is restarted one answer timeout later. Exact virtual times under MockClock."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from trio_sync.protocol import Message, PullPage

from .._virtual import World


def lose_first_page_with_events() -> tuple[list[PullPage], Callable[[Message], bool]]:
    lost: list[PullPage] = []

    def drop(message: Message) -> bool:
        if isinstance(message, PullPage) and message.events and not lost:
            lost.append(message)
            return True
        return False

    return lost, drop


async def test_a_lost_last_page_is_noticed_one_answer_timeout_after_the_ack(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    # What was tried: the page echoing A's only event lost on its way (nothing comes after
    # it to show a gap); the ack tells A that the server holds it. The watch restarts the
    # pull one answer timeout (12 s) after the ack, and the restarted pull brings it.
    await world.start_server()
    lost, drop = lose_first_page_with_events()
    async with world.client("A", drop=drop) as client:
        await client.commit("note.added", {"n": 1})
        await client.wait_synced()
        assert len(lost) == 1
        acked = world.times("A", "push.ack")
        assert len(acked) == 1
        assert world.times("A", "pull.stalled") == [acked[0] + 12.0]
        assert client.status.upstream_head == 1
