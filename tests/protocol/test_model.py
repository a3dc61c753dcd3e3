"""Random interleavings of commits, pushes, acks, lost acks and pulls, with no event loop.

A pure in-memory server (the real ``decide_push`` over a list) and several ``SyncState``
clients exchange messages through queues that may lose them. Every step keeps every
invariant; at the end, after the network heals, each client holds exactly the server's
order and nothing is pending.
"""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trio_sync.protocol import (
    Accept,
    Ahead,
    Event,
    Push,
    PushFacts,
    Refused,
    Reject,
    SyncState,
    decide_push,
)


class ModelServer:
    def __init__(self) -> None:
        self.log: list[Event] = []

    def facts(self, client_id: str, push: Push) -> PushFacts:
        own = [e for e in self.log if e.client_id == client_id]
        return PushFacts(
            head=len(self.log),
            last_client_seq=len(own),
            foreign_after_parent=any(e.client_id != client_id for e in self.log[push.parent :]),
            held={e.client_seq: e for e in own},
        )

    def push(self, client_id: str, push: Push) -> Accept | Ahead:
        decision = decide_push(push, client_id, self.facts(client_id, push))
        assert not isinstance(decision, Reject), decision.reason
        if isinstance(decision, Accept):
            self.log.extend(decision.new)
        return decision


class Interleavings(RuleBasedStateMachine):
    @initialize(n_clients=st.integers(2, 4))
    def start(self, n_clients: int) -> None:
        self.server = ModelServer()
        self.clients = [SyncState(f"c{i}") for i in range(n_clients)]
        self.replies: list[deque[tuple[Push, Accept | Ahead]]] = [deque() for _ in self.clients]
        self.confirmed: list[list[Event]] = [[] for _ in self.clients]
        self.heads = [0] * n_clients
        self.committed: list[list[Event]] = [[] for _ in self.clients]

    def client(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.clients) - 1), label="client")

    @rule(data=st.data(), count=st.sampled_from([1, 2, 10]))
    def commit(self, data: st.DataObject, count: int) -> None:
        c = self.client(data)
        for _ in range(count):
            self.committed[c].append(self.clients[c].commit("e", {"by": c}))

    @rule(data=st.data(), batch=st.sampled_from([1, 2, 10, 100]), lost=st.booleans())
    def push(self, data: st.DataObject, batch: int, lost: bool) -> None:
        c = self.client(data)
        plan = self.clients[c].plan_push(batch)
        if plan is None or lost:  # lost: the push never reached the server
            return
        push = Push(push_id=1, parent=plan.parent, events=plan.events)
        self.replies[c].append((push, self.server.push(self.clients[c].client_id, push)))

    @rule(data=st.data(), lost=st.booleans())
    def reply(self, data: st.DataObject, lost: bool) -> None:
        c = self.client(data)
        if not self.replies[c]:
            return
        push, decision = self.replies[c].popleft()
        if isinstance(decision, Accept) and not lost:  # lost: the ack never arrived
            self.clients[c].acknowledge(push.events[0].client_seq, len(decision.seqs))

    @rule(data=st.data(), page=st.sampled_from([1, 3, 50]), drop_first=st.booleans())
    def pull(self, data: st.DataObject, page: int, drop_first: bool) -> None:
        c = self.client(data)
        state = self.clients[c]
        events = self.server.log[state.upstream_head : state.upstream_head + page]
        if drop_first and len(events) > 1:
            before = (state.upstream_head, state.pending)
            assert isinstance(state.merge(events[1:]), Refused)  # a lost page: a gap
            assert (state.upstream_head, state.pending) == before
            return
        result = state.merge(events)
        assert not isinstance(result, Refused), result.reason
        self.confirmed[c].extend(result.applied)

    @invariant()
    def invariants_hold(self) -> None:
        for c, state in enumerate(getattr(self, "clients", [])):
            state.check_invariants()
            assert state.upstream_head >= self.heads[c], "head moved backwards"
            self.heads[c] = state.upstream_head
            assert self.confirmed[c] == self.server.log[: state.upstream_head]
            # never lost: every commit is confirmed or pending, never both
            confirmed_own = [
                e.client_seq for e in self.confirmed[c] if e.client_id == state.client_id
            ]
            pending = [e.client_seq for e in state.pending]
            assert confirmed_own + pending == [e.client_seq for e in self.committed[c]]
        if hasattr(self, "server"):
            keys = [e.key for e in self.server.log]
            assert len(keys) == len(set(keys)), "an event was appended twice"
            assert [e.seq for e in self.server.log] == list(range(1, len(keys) + 1))

    def teardown(self) -> None:
        if not hasattr(self, "server"):
            return
        # The network heals: replies arrive, pushes get through, pulls are whole.
        for _ in range(len(self.clients) * 4 + 10):
            for c, state in enumerate(self.clients):
                while self.replies[c]:
                    self.reply_for(c)
                plan = state.plan_push(100)
                if plan is not None:
                    push = Push(push_id=1, parent=plan.parent, events=plan.events)
                    self.replies[c].append((push, self.server.push(state.client_id, push)))
                    self.reply_for(c)
                result = state.merge(self.server.log[state.upstream_head :])
                assert not isinstance(result, Refused)
                self.confirmed[c].extend(result.applied)
            if all(not s.pending and s.upstream_head == len(self.server.log) for s in self.clients):
                break
        for c, state in enumerate(self.clients):
            assert state.pending == (), f"client {c} still has pending events"
            assert self.confirmed[c] == self.server.log
            mine = [e for e in self.server.log if e.client_id == state.client_id]
            assert [e.client_seq for e in mine] == list(range(1, len(mine) + 1))
            assert [(e.name, e.args) for e in mine] == [(e.name, e.args) for e in self.committed[c]]

    def reply_for(self, c: int) -> None:
        push, decision = self.replies[c].popleft()
        if isinstance(decision, Accept):
            self.clients[c].acknowledge(push.events[0].client_seq, len(decision.seqs))


Interleavings.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestInterleavings = Interleavings.TestCase
