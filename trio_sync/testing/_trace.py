"""The trace of a simulated run: what happened, in order, with virtual times."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import attrs

#: Steps that are faults (injected by the plan, the network or the workload): a failure
#: report shows the trace from the first of them on.
FAULTS = frozenset(
    {
        "cut",
        "crash",
        "down",
        "partition",
        "lost.push_ack",
        "lost.pull_page",
        "delayed.push_ack",
        "lose_next_ack",
    }
)


@attrs.frozen
class TraceRecord:
    """One step: at virtual time ``t``, ``actor`` did or saw ``what``."""

    t: float
    actor: str
    what: str
    details: Mapping[str, object] = attrs.field(factory=dict)

    def line(self) -> str:
        """A canonical text form (the digest is computed over these).

        repr() of floats, ints and strings is exact and the same in every process.
        """
        details = ",".join(f"{key}={value!r}" for key, value in sorted(self.details.items()))
        return f"{self.t!r}|{self.actor}|{self.what}|{details}"

    def __str__(self) -> str:
        details = " ".join(f"{key}={value}" for key, value in self.details.items())
        return f"{self.t:10.4f}  {self.actor:<8} {self.what:<22} {details}"


class Trace:
    """An append-only list of records with a digest: the proof of determinism."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []
        self._hash = hashlib.sha256()

    def add(self, t: float, actor: str, what: str, details: Mapping[str, object]) -> None:
        record = TraceRecord(t, actor, what, dict(details))
        self.records.append(record)
        self._hash.update(record.line().encode())
        self._hash.update(b"\n")

    def digest(self) -> str:
        """A hex digest of every record so far: same run, same digest, in any process."""
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def first_fault(self) -> int | None:
        """The index of the first fault step (see ``FAULTS``), or None for a clean run."""
        return next((i for i, r in enumerate(self.records) if r.what in FAULTS), None)

    def format(self, *, actor: str | None = None, limit: int | None = None) -> str:
        """The records as text, one per line (optionally one actor's, the last ``limit``)."""
        chosen = [r for r in self.records if actor is None or r.actor == actor]
        if limit is not None:
            chosen = chosen[-limit:]
        return "\n".join(str(record) for record in chosen)


#: Steps that repeat while stuck and say nothing about why.
_NOISE = {"heartbeat.kick_push", "heartbeat.restart_pull", "commit"}


def explain_stall(trace: Trace, client_id: str, limit: int = 10) -> list[str]:
    """The client's trace from the last push that failed or was refused, without the
    heartbeat's repeated complaints: what came back, what the push loop did with it, and
    what it did not do afterwards.
    """
    records = [r for r in trace if r.actor == client_id]
    stops = [
        i
        for i, r in enumerate(records)
        if r.what in ("push.deadline", "push.server_ahead", "push.rejected")
    ]
    if not stops:
        return []
    sends = [i for i in range(stops[-1]) if records[i].what == "push.send"]
    after = records[sends[-1] if sends else stops[-1] :]
    shown = [r for r in after if r.what not in _NOISE]
    noise = len(after) - len(shown)
    lines = [str(r) for r in shown[:limit]]
    if len(shown) > limit:
        lines.append(f"... {len(shown) - limit} more steps")
    commits = sum(1 for r in after if r.what == "commit")
    kicks = sum(1 for r in after if r.what == "heartbeat.kick_push")
    if noise:
        lines.append(
            f"(not shown: {commits} new commits, {kicks} heartbeat kicks the push "
            f"loop ignored, {noise - commits - kicks} pull restarts)"
        )
    stopped = records[stops[-1]]
    pushes_after = sum(1 for r in records[stops[-1] :] if r.what == "push.send")
    lines.append(f"push loop sent {pushes_after} push(es) after t={stopped.t:.4f}")
    return lines


def from_first_fault(trace: Trace, limit: int) -> list[str]:
    """The trace from its first fault on (the last ``limit`` steps of a clean run), as
    lines; a long stretch keeps its beginning and its end."""
    first = trace.first_fault()
    records = trace.records
    if first is None:
        heading = f"no fault happened; the last steps of {len(records)}:"
        chosen = records[-limit:]
    else:
        heading = (
            f"trace from the first fault (step {first + 1} of {len(records)}, "
            f"t={records[first].t:.4f}):"
        )
        chosen = records[first:]
    lines = [heading]
    if len(chosen) > limit:
        half = limit // 2
        lines += [str(r) for r in chosen[:half]]
        lines.append(f"    ... {len(chosen) - 2 * half} steps (--full-trace shows them) ...")
        lines += [str(r) for r in chosen[-half:]]
    else:
        lines += [str(r) for r in chosen]
    return lines
