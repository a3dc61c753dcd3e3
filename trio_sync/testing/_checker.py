"""What every finished run must satisfy, checked from its result alone."""

from __future__ import annotations

import attrs

from ._scenario import ScenarioResult
from ._trace import explain_stall as explain_trace_stall


@attrs.frozen
class CheckReport:
    """The verdict on a run: ``ok``, or the problems found (and the stall, if any)."""

    result: ScenarioResult
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        result = self.result
        head = (
            f"seed {result.seed} under {result.policy!r}: "
            f"{'ok' if self.ok else f'{len(self.problems)} problem(s)'}"
        )
        lines = [head, f"  params: {result.params.describe()}"]
        lines += [f"  - {problem}" for problem in self.problems]
        if result.stall:
            lines.append(f"  stalled at t={result.virtual_seconds:g}s:")
            for client in result.stall:
                lines.append(f"    {client}")
                if client.pending:
                    lines += [f"      {line}" for line in explain_stall(result, client.client_id)]
        if not self.ok:
            lines.append(f"  replay: {result.replay_command}")
        return "\n".join(lines)


def explain_stall(result: ScenarioResult, client_id: str, limit: int = 10) -> list[str]:
    """What the client's push loop did from its last failed push on (see
    :func:`trio_sync.testing._trace.explain_stall`)."""
    return explain_trace_stall(result.trace, client_id, limit)


def check_run(result: ScenarioResult) -> CheckReport:
    """Checks a finished run.

    Every client converged to the server's log; no committed event lost or duplicated;
    each client's events in its commit order; nothing pending. For a run that did not
    converge by its deadline, the report explains the stall: what was pending, since when
    (virtual time), and what the push loop was doing.
    """
    problems: list[str] = []
    server = result.server_log
    if not result.converged:
        problems.append(f"did not converge within {result.params.deadline:g} virtual seconds")

    seqs = [event.seq for event in server]
    if seqs != list(range(1, len(server) + 1)):
        problems.append("the server's log has gaps or is out of order")
    keys = [event.key for event in server]
    duplicates = len(keys) - len(set(keys))
    if duplicates:
        problems.append(f"the server's log holds {duplicates} duplicated event(s)")

    held = {event.key: event for event in server}
    for client_id, events in result.committed.items():
        lost = [e.client_seq for e in events if e.key not in held]
        if lost:
            problems.append(
                f"{client_id}: {len(lost)} committed event(s) not on the server, "
                f"client_seq {lost[:5]}{'...' if len(lost) > 5 else ''}"
            )
        changed = [e.client_seq for e in events if e.key in held and not held[e.key].same_fact(e)]
        if changed:
            problems.append(f"{client_id}: events changed on the way: client_seq {changed[:5]}")
        order = [e.client_seq for e in server if e.client_id == client_id]
        if order != sorted(order) or order != list(range(1, len(order) + 1)):
            problems.append(f"{client_id}: its events are not in commit order on the server")

    for client_id, log in result.logs.items():
        if [(e.seq, e.key) for e in log] != [(e.seq, e.key) for e in server]:
            problems.append(
                f"{client_id}: log of {len(log)} events differs from the server's {len(server)}"
            )
    for client_id, pending in result.pending.items():
        if pending:
            problems.append(f"{client_id}: {len(pending)} event(s) still pending")
    return CheckReport(result, tuple(problems))


def assert_converged(result: ScenarioResult) -> None:
    """Raises AssertionError with the full report (and the replay command) unless ok."""
    report = check_run(result)
    if not report.ok:
        raise AssertionError(str(report))
