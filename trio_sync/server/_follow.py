"""Following a log that other server nodes append to (PostgreSQL).

Each node listens for the appends of every node (``LISTEN``; a notification carries a
store and its new head) and feeds them to its pullers through the same path as its own
appends (:meth:`Hub.catch_up` reads the events from the table and publishes them). A
notification can be missed (the listening connection was down when it was sent), so the
heads of the stores this node serves are also polled every ``poll_interval`` seconds, and
at once after every reconnection.

When the database goes away, the listener reconnects with capped, jittered backoff.
Meanwhile this node's clients get "retry" answers to their pushes (the writer cannot
commit) and no new events: they show "syncing", never wrong data.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

import trio

from .._errors import StoreError
from ..protocol import backoff_delay

if TYPE_CHECKING:
    from ..store import HeadFeed
    from ._hub import Hub

logger = logging.getLogger("trio_sync.server")

#: Seconds between polls of the heads, the fallback for a missed notification.
POLL_INTERVAL = 1.0

#: The longest one wait for notifications blocks a worker thread (and so a shutdown).
_WAIT_SLICE = 0.25


async def follow_database(
    hub: Hub,
    *,
    poll_interval: float = POLL_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keeps every store this node serves at the database's head; runs until cancelled."""
    task_status.started()
    failures = 0
    rng = random.Random()
    while True:
        feed: HeadFeed | None = None
        try:
            feed = await hub.run_store(hub.db.listen)
            # Back only once the heads were read too (through the pool, which the pushes
            # use): a listener that connects while the pool cannot would otherwise say
            # "reachable again", then "lost" at the poll, again and again.
            await _poll(hub)
            if failures:
                logger.warning("database reachable again: following other nodes' appends")
            failures = 0
            await _follow(hub, feed, poll_interval)
        except StoreError as exc:
            failures += 1
            delay = backoff_delay(failures, base=0.1, cap=2.0, jitter=rng.random())
            log = logger.warning if failures == 1 else logger.debug
            log("lost the database (%s); reconnecting in %.2fs", exc, delay)
            await trio.sleep(delay)
        finally:
            if feed is not None:
                with trio.CancelScope(shield=True):
                    await hub.run_store(feed.close)


async def _poll(hub: Hub) -> None:
    """Reads the heads of the stores this node serves (of none: it still asks the
    database, to learn that it answers)."""
    heads = await hub.run_store(hub.db.heads, hub.open_store_ids())
    if heads:
        await hub.learn_heads(heads)


async def _follow(hub: Hub, feed: HeadFeed, poll_interval: float) -> None:
    polled = time.monotonic()  # right after (re)connecting: follow_database polled
    while True:
        if time.monotonic() - polled >= poll_interval:
            await _poll(hub)
            polled = time.monotonic()
        heads = await hub.run_store(feed.wait, min(_WAIT_SLICE, poll_interval))
        if heads:
            await hub.learn_heads(heads)
