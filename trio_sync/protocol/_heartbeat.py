"""The heartbeat: sans-IO health checks that heal silent failures.

Each tick (every ``interval`` seconds of the runtime's clock) looks at a few facts and
answers with actions, after livestore-filesync's heartbeat:

* a ping unanswered for ``pong_timeout`` means the connection is dead: replace it;
* the server's head is ahead of ours and the pull made no progress for ``stuck_ticks``
  ticks: the stream stalled (a page was lost): restart the pull;
* events wait to be pushed with nothing pushing them for ``stuck_ticks`` ticks: the push
  queue is stuck: kick the push supervisor.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SendPing:
    nonce: int


@attrs.frozen
class ConnectionDead:
    reason: str


@attrs.frozen
class RestartPull:
    reason: str


@attrs.frozen
class KickPush:
    reason: str


HeartbeatAction = SendPing | ConnectionDead | RestartPull | KickPush


@attrs.frozen
class HeartbeatTimings:
    #: Seconds between ticks.
    interval: float = 5.0
    #: Seconds without a pong before the connection counts as dead.
    pong_timeout: float = 10.0
    #: Consecutive ticks without progress before a stream or queue counts as stuck.
    stuck_ticks: int = 2


class Heartbeat:
    """One connection's health monitor. A new connection gets a new one."""

    def __init__(self, timings: HeartbeatTimings | None = None) -> None:
        self.timings = timings or HeartbeatTimings()
        self.server_head = 0
        self._ping_sent_at: float | None = None
        self._nonce = 0
        self._last_upstream_head: int | None = None
        self._stalled_ticks = 0
        self._fruitless_pull_restarts = 0
        self._stuck_queue_ticks = 0

    @property
    def stuck(self) -> bool:
        """True while a stuck push queue or stalled stream has not healed."""
        return (
            self._stuck_queue_ticks >= self.timings.stuck_ticks
            or self._fruitless_pull_restarts >= 2
        )

    def note_server_head(self, head: int) -> None:
        """The server told us its head (welcome, pull page or pong)."""
        self.server_head = max(self.server_head, head)

    def on_pong(self, nonce: int, server_head: int) -> None:
        if nonce == self._nonce:
            self._ping_sent_at = None
        self.note_server_head(server_head)

    def tick(self, now: float, *, upstream_head: int, push_stuck: bool) -> list[HeartbeatAction]:
        """One heartbeat. ``push_stuck``: the push machine holds work but is parked."""
        timings = self.timings
        if self._ping_sent_at is not None and now - self._ping_sent_at >= timings.pong_timeout:
            return [ConnectionDead(f"no pong for {now - self._ping_sent_at:g}s")]

        actions: list[HeartbeatAction] = []
        if self._ping_sent_at is None:
            self._nonce += 1
            self._ping_sent_at = now
            actions.append(SendPing(self._nonce))

        progressed = self._last_upstream_head is None or upstream_head > self._last_upstream_head
        self._last_upstream_head = upstream_head
        if progressed:
            self._fruitless_pull_restarts = 0
        if self.server_head > upstream_head and not progressed:
            self._stalled_ticks += 1
        else:
            self._stalled_ticks = 0
        if self._stalled_ticks >= timings.stuck_ticks:
            self._stalled_ticks = 0
            self._fruitless_pull_restarts += 1
            actions.append(
                RestartPull(
                    f"server head {self.server_head} ahead of {upstream_head} with no progress"
                )
            )

        self._stuck_queue_ticks = self._stuck_queue_ticks + 1 if push_stuck else 0
        if self._stuck_queue_ticks >= timings.stuck_ticks:
            actions.append(KickPush(f"push queue stuck for {self._stuck_queue_ticks} ticks"))
        return actions
