"""The trace of a simulated run: what happened, in order, with virtual times."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import attrs


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

    def format(self, *, actor: str | None = None, limit: int | None = None) -> str:
        """The records as text, one per line (optionally one actor's, the last ``limit``)."""
        chosen = [r for r in self.records if actor is None or r.actor == actor]
        if limit is not None:
            chosen = chosen[-limit:]
        return "\n".join(str(record) for record in chosen)
