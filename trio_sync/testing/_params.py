"""Simulation and scenario parameters: every one drawn from the seed, any one pinned.

:class:`SimParams` is the world's: network latency and background faults. A workload's
own parameters are read with ``world.param``. :class:`ScenarioParams` adds what
``run_scenario``'s generated workload does. Both draw the shared fields from the same
named sources, so a seed has the same network and faults under either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..protocol import PUSH_POLICIES

BATCH_SIZES = (1, 2, 10, 100)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return min(high, int(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def _named_rng(seed: int) -> Callable[[str], random.Random]:
    # One source per parameter, named after it: pinning one never shifts the others.
    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    return rng


def _draw_network_and_faults(rng: Callable[[str], random.Random]) -> dict[str, Any]:
    faulty = rng("faulty").random() < 0.7  # some runs have a clean network
    return {
        "latency": round(rng("latency").uniform(0.0, 0.015), 6),
        "jitter": round(rng("jitter").uniform(0.0, 0.005), 6),
        "ack_loss": round(rng("ack_loss").uniform(0.0, 0.3), 3) if faulty else 0.0,
        "ack_delay": round(rng("ack_delay").uniform(0.0, 0.1), 3) if faulty else 0.0,
        "page_loss": round(rng("page_loss").uniform(0.0, 0.2), 3) if faulty else 0.0,
        "disconnects": rng("disconnects").randint(0, 3) if faulty else 0,
        "server_restarts": rng("server_restarts").randint(0, 2) if faulty else 0,
        "client_crashes": rng("client_crashes").randint(0, 2) if faulty else 0,
    }


#: Allowed ranges, checked whichever way a parameter was set (drawn, pinned, --param).
_PROBABILITIES = ("ack_loss", "ack_delay", "page_loss")
_NON_NEGATIVE = (
    "latency",
    "jitter",
    "pause",
    "disconnects",
    "server_restarts",
    "client_crashes",
    "fault_window",
)


_WHOLE = (
    "clients",
    "commit_batch",
    "push_batch_size",
    "disconnects",
    "server_restarts",
    "client_crashes",
)


def _check_types(pinned: Mapping[str, Any]) -> None:
    """Raises ValueError for a pinned value of the wrong kind (before it is used)."""
    for name, value in pinned.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in _WHOLE and not (number and value == int(value)):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        if name in (*_PROBABILITIES, *_NON_NEGATIVE, "deadline") and not number:
            raise ValueError(f"{name} must be a number, got {value!r}")
        if name in ("events", "lose_acks", "lose_pages"):
            items = value if isinstance(value, (tuple, list)) else (value,)
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in items):
                raise ValueError(f"{name} takes whole numbers, got {value!r}")


def _check_ranges(params: object) -> None:
    """Raises ValueError naming the first parameter out of its range."""
    values = attrs.asdict(params, recurse=False)  # type: ignore[arg-type]
    for name in _PROBABILITIES:
        if name in values and not 0.0 <= values[name] <= 1.0:
            raise ValueError(f"{name} is a probability (0 to 1), got {values[name]!r}")
    for name in _NON_NEGATIVE:
        if name in values and values[name] < 0:
            raise ValueError(f"{name} must not be negative, got {values[name]!r}")
    if "deadline" in values and not values["deadline"] > 0:
        raise ValueError(f"deadline must be positive, got {values['deadline']!r}")
    if "clients" in values and not 1 <= values["clients"] <= 26:
        raise ValueError(f"clients must be 1 to 26, got {values['clients']!r}")
    for name in ("commit_batch", "push_batch_size"):
        if name in values and values[name] < 1:
            raise ValueError(f"{name} must be at least 1, got {values[name]!r}")
    if any(n < 0 for n in values.get("events", ())):
        raise ValueError(f"events must not be negative, got {values['events']!r}")
    for name in ("lose_acks", "lose_pages"):
        if any(n < 1 for n in values.get(name, ())):
            raise ValueError(f"{name} counts from 1, got {values[name]!r}")


def _check_names(cls: type, pinned: Mapping[str, Any], what: str) -> None:
    unknown = set(pinned) - {field.name for field in attrs.fields(cls)}
    if unknown:
        raise TypeError(f"unknown {what} parameters: {sorted(unknown)}")


#: The background faults and the value that turns each off (what shrinking tries).
NO_FAULTS: dict[str, Any] = {
    "ack_loss": 0.0,
    "ack_delay": 0.0,
    "page_loss": 0.0,
    "disconnects": 0,
    "server_restarts": 0,
    "client_crashes": 0,
    "lose_acks": (),
    "lose_pages": (),
}


@attrs.frozen
class SimParams:
    """The simulated world's network and background faults. ``draw(seed, **pinned)``.

    Attributes:
        latency: One-way network latency in seconds (0 to 15 ms when drawn).
        jitter: Extra random latency per message, up to this many seconds.
        ack_loss: Probability that a push ack is lost on the way.
        ack_delay: Probability that a push ack is held up 0.5 to 4 seconds (past the ack
            timeout, so it arrives after the client retried).
        page_loss: Probability that a pull page is lost on the way.
        disconnects: How many times an online client's connection is cut.
        server_restarts: How many times the server restarts on its database.
        client_crashes: How many times an online client crashes.
        lose_acks: Push acks to lose on purpose: the n-th ack the server sends (1-based).
        lose_pages: Pull pages to lose on purpose: the n-th page the server sends.
        fault_window: Background faults happen at times drawn uniformly in
            ``[0, fault_window]`` virtual seconds (1 to 10 when drawn): pin it to the
            length of your workload.
        deadline: Virtual time by which the workload must have returned and every client
            converged; a run still going then is reported as stalled.
        schema: The server's ``(schema_name, schema_version)``; clients opened through
            the world speak it unless told otherwise.

    Seventy percent of drawn worlds have faults; the rest have a clean network.
    """

    latency: float
    jitter: float
    ack_loss: float
    ack_delay: float
    page_loss: float
    disconnects: int
    server_restarts: int
    client_crashes: int
    lose_acks: tuple[int, ...] = ()
    lose_pages: tuple[int, ...] = ()
    fault_window: float = 10.0
    deadline: float = 300.0
    schema: tuple[str, int] = ("default", 1)

    def __attrs_post_init__(self) -> None:
        _check_ranges(self)

    @classmethod
    def draw(cls, seed: int, **pinned: Any) -> SimParams:
        """Draws every parameter from ``seed``; keyword arguments pin any of them.

        Raises:
            TypeError: An unknown parameter name.
        """
        _check_names(cls, pinned, "simulation")
        _check_types(pinned)
        rng = _named_rng(seed)
        drawn = _draw_network_and_faults(rng)
        drawn["fault_window"] = round(rng("fault_window").uniform(1.0, 10.0), 6)
        drawn.update(pinned)
        for name in ("lose_acks", "lose_pages"):
            drawn[name] = tuple(drawn.get(name, ()))
        if "schema" in drawn:
            name, version = drawn["schema"]
            drawn["schema"] = (str(name), int(version))
        return cls(**drawn)

    def describe(self) -> str:
        """One line with every parameter, as keyword arguments."""
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in attrs.fields(type(self)))


@attrs.frozen
class ScenarioParams:
    """What a simulated run does. ``draw(seed, **pinned)`` makes one.

    Attributes:
        clients: How many clients (2 to 4 when drawn).
        events: Events each client commits (1 to 400 each when drawn, log-uniformly: most
            runs are small and quick, large ones still come up regularly).
        commit_batch: Events committed back to back before a pause (1, 2, 10 or 100).
        push_batch_size: The clients' push batch size (1, 2, 10 or 100).
        latency: One-way network latency in seconds (0 to 15 ms when drawn).
        jitter: Extra random latency per message, up to this many seconds.
        pause: Longest pause between commit batches, in seconds.
        ack_loss: Probability that a push ack is lost on the way.
        ack_delay: Probability that a push ack is held up 0.5 to 4 seconds (past the ack
            timeout, so it arrives after the client retried).
        page_loss: Probability that a pull page is lost on the way.
        disconnects: How many times a random client's connection is cut.
        server_restarts: How many times the server restarts on its database.
        client_crashes: How many times a random client crashes and restarts.
        lose_acks: Push acks to lose on purpose: the n-th ack the server sends (1-based).
        lose_pages: Pull pages to lose on purpose: the n-th page the server sends.
        deadline: Virtual seconds after which a run that has not converged is stalled.
    """

    clients: int
    events: tuple[int, ...]
    commit_batch: int
    push_batch_size: int
    latency: float
    jitter: float
    pause: float
    ack_loss: float
    ack_delay: float
    page_loss: float
    disconnects: int
    server_restarts: int
    client_crashes: int
    lose_acks: tuple[int, ...] = ()
    lose_pages: tuple[int, ...] = ()
    deadline: float = 300.0

    def __attrs_post_init__(self) -> None:
        _check_ranges(self)

    @property
    def client_ids(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(self.clients)]

    @classmethod
    def draw(cls, seed: int, **pinned: Any) -> ScenarioParams:
        """Draws every parameter from ``seed``; keyword arguments pin any of them.

        Each parameter has its own draw, so pinning one never changes the others.
        ``events`` is one count per client, or one count for every client.

        Raises:
            TypeError: An unknown parameter name.
            ValueError: A value of the wrong kind or out of its range, or ``events`` with
                another number of counts than ``clients``.
        """
        _check_names(cls, pinned, "scenario")
        _check_types(pinned)
        rng = _named_rng(seed)
        clients = pinned.get("clients", rng("clients").randint(2, 4))
        drawn: dict[str, Any] = {
            "clients": clients,
            "events": tuple(_log_uniform(rng(f"events:{i}"), 1, 400) for i in range(clients)),
            "commit_batch": rng("commit_batch").choice(BATCH_SIZES),
            "push_batch_size": rng("push_batch_size").choice(BATCH_SIZES),
            "pause": round(rng("pause").uniform(0.0, 0.5), 6),
            **_draw_network_and_faults(rng),
        }
        drawn.update(pinned)
        if "events" in pinned and isinstance(pinned["events"], int):
            drawn["events"] = (pinned["events"],) * drawn["clients"]
        drawn["events"] = tuple(drawn["events"])
        if len(drawn["events"]) != drawn["clients"]:
            # One count per client: a list of another length is a mistake in the pins
            # (cutting or repeating it would run something the caller did not ask for).
            counts, clients = len(drawn["events"]), drawn["clients"]
            how = "" if "clients" in pinned else " (drawn from the seed)"
            fix = f", or pin clients={counts}" if 1 <= counts <= 26 else ""
            raise ValueError(
                f"events={drawn['events']!r} has {counts} count(s), one per client, but "
                f"clients={clients}{how}: give {clients} count(s){fix}"
            )
        drawn["lose_acks"] = tuple(drawn.get("lose_acks", ()))
        drawn["lose_pages"] = tuple(drawn.get("lose_pages", ()))
        return cls(**drawn)

    def describe(self) -> str:
        """One line with every parameter, as keyword arguments."""
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in attrs.fields(type(self)))

    def fault_window(self) -> float:
        """When background faults may happen: while the busiest client commits.

        Roughly that client's pauses plus one latency per event, and a second of slack.
        """
        return 1.0 + max(
            (events / self.commit_batch) * self.pause / 2 + events * self.latency
            for events in self.events
        )

    def sim_params(self) -> SimParams:
        """The world this scenario runs in."""
        shared = {f.name for f in attrs.fields(SimParams)} - {"fault_window", "schema"}
        return SimParams(
            **{name: getattr(self, name) for name in shared}, fault_window=self.fault_window()
        )


def check_policy(policy: str) -> None:
    if policy not in PUSH_POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {sorted(PUSH_POLICIES)}")
