"""The handshake decisions: may this client and this server sync? Pure functions."""

from __future__ import annotations

from ._messages import PROTOCOL_VERSION, Hello, Welcome


def protocol_problem(hello: Hello) -> str | None:
    """Why the server cannot even talk with the sender of ``hello`` (None: it can)."""
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            f"protocol version {hello.protocol_version} is not supported "
            f"(server speaks {PROTOCOL_VERSION})"
        )
    return None


def hello_problem(hello: Hello, schema: tuple[str, int]) -> str | None:
    """Why the server must refuse ``hello`` (None: welcome it). Retrying cannot help."""
    problem = protocol_problem(hello)
    if problem:
        return problem
    name, version = schema
    if (hello.schema_name, hello.schema_version) != (name, version):
        return (
            f"schema {hello.schema_name!r} v{hello.schema_version} does not match "
            f"the server's {name!r} v{version}"
        )
    return None


def welcome_problem(
    welcome: Welcome,
    *,
    schema: tuple[str, int],
    known_server_id: str | None,
    upstream_head: int,
) -> str | None:
    """Why the client cannot sync with the server that sent ``welcome`` (None: it can)."""
    name, version = schema
    if welcome.protocol_version != PROTOCOL_VERSION:
        return (
            f"server speaks protocol version {welcome.protocol_version}, this client "
            f"{PROTOCOL_VERSION}"
        )
    if (welcome.schema_name, welcome.schema_version) != (name, version):
        return (
            f"server schema {welcome.schema_name!r} v{welcome.schema_version} does not "
            f"match this client's {name!r} v{version}"
        )
    if known_server_id is not None and welcome.server_id != known_server_id:
        return (
            f"the server's database was replaced (server id {welcome.server_id}, this "
            f"client synced with {known_server_id}): its log is not the one this client holds"
        )
    if welcome.head < upstream_head:
        return (
            f"the server's head {welcome.head} is behind this client's {upstream_head}: "
            "the server lost events"
        )
    return None
