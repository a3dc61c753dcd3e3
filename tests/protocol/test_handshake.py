"""Handshake decisions: who may sync with whom, and the reason when not."""

from __future__ import annotations

from trio_sync.protocol import (
    PROTOCOL_VERSION,
    Hello,
    Welcome,
    WireLimits,
    hello_problem,
    server_lost_events,
    welcome_problem,
)

SCHEMA = ("todo", 2)


def welcome(
    server_id: str = "s1",
    head: int = 10,
    schema: tuple[str, int] = SCHEMA,
    protocol: int = PROTOCOL_VERSION,
) -> Welcome:
    return Welcome(protocol, server_id, schema[0], schema[1], head, "default", WireLimits())


def test_matching_hello_is_welcome() -> None:
    assert hello_problem(Hello(PROTOCOL_VERSION, "A", "todo", 2, None, 0), SCHEMA) is None


def test_hello_with_another_protocol_or_schema_is_refused() -> None:
    other_protocol = hello_problem(Hello(PROTOCOL_VERSION + 1, "A", "todo", 2, None, 0), SCHEMA)
    assert (
        other_protocol
        and f"protocol version {PROTOCOL_VERSION + 1} is not supported" in other_protocol
    )
    other_schema = hello_problem(Hello(PROTOCOL_VERSION, "A", "todo", 1, None, 0), SCHEMA)
    assert other_schema == "schema 'todo' v1 does not match the server's 'todo' v2"


def test_first_contact_accepts_any_server() -> None:
    assert welcome_problem(welcome(), schema=SCHEMA, known_server_id=None, upstream_head=0) is None


def test_same_server_ahead_of_us_is_fine() -> None:
    assert (
        welcome_problem(welcome(head=10), schema=SCHEMA, known_server_id="s1", upstream_head=10)
        is None
    )


def test_replaced_server_database_is_named() -> None:
    problem = welcome_problem(welcome("s2"), schema=SCHEMA, known_server_id="s1", upstream_head=3)
    assert problem and "database was replaced" in problem and "s2" in problem


def test_server_behind_the_client_lost_events() -> None:
    problem = welcome_problem(welcome(head=2), schema=SCHEMA, known_server_id="s1", upstream_head=5)
    assert problem == "the server's head 2 is behind this client's 5: the server lost events"


def test_only_our_own_server_with_a_shorter_log_lost_events() -> None:
    # What a reset records again after: the same log (server id), shorter than ours.
    assert server_lost_events(welcome(head=2), known_server_id="s1", upstream_head=5)
    assert not server_lost_events(welcome(head=5), known_server_id="s1", upstream_head=5)
    assert not server_lost_events(welcome("s2", head=2), known_server_id="s1", upstream_head=5)
    assert not server_lost_events(welcome(head=2), known_server_id=None, upstream_head=5)


def test_schema_and_protocol_mismatches_are_named() -> None:
    problem = welcome_problem(
        welcome(schema=("todo", 3)), schema=SCHEMA, known_server_id=None, upstream_head=0
    )
    assert problem and "'todo' v3 does not match this client's 'todo' v2" in problem
    problem = welcome_problem(
        welcome(protocol=9), schema=SCHEMA, known_server_id=None, upstream_head=0
    )
    assert problem and "protocol version 9" in problem
