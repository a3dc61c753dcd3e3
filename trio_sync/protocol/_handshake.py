"""The handshake decisions: may this client and this server sync? Pure functions."""

from __future__ import annotations

from ._blob_messages import BlobHello
from ._messages import PROTOCOL_VERSION, Hello, Welcome


def protocol_problem(hello: Hello | BlobHello) -> str | None:
    """Why the server cannot even talk with the sender of ``hello`` (None: it can); the
    same for a sync connection and a blob connection."""
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


def server_lost_events(
    welcome: Welcome, *, known_server_id: str | None, upstream_head: int
) -> bool:
    """Whether ``welcome`` comes from this client's own log, shorter than what the client
    holds: the server lost events (restored from an older backup). A reset then records
    again this client's events it had confirmed and lost. (Stricter than the head check
    of :func:`welcome_problem`: a client that never knew the server's id has no log of
    that server's to compare.)"""
    return welcome.server_id == known_server_id and welcome.head < upstream_head


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


def reused_id_problem(client_id: str, *, committed: int | None, held: int) -> str | None:
    """Why the server must refuse a client whose id another store already used (None: it
    need not).

    A store commits each event durably before pushing it, so the server can only hold
    client_seqs the store has committed. Holding more means the events came from another
    store with the same id (a recreated store, a reinstalled device, a fixed id used
    twice): its pushes would clash with them for ever.

    Args:
        client_id: The id in the hello.
        committed: The highest client_seq the client says its store committed (None: the
            client did not say; nothing to compare).
        held: The highest client_seq the server holds from ``client_id``.
    """
    if committed is None or held <= committed:
        return None
    return (
        f"client id {client_id!r} is already used by another store: the server holds its "
        f"events up to client_seq {held}, this store committed only up to {committed}. "
        "Give each store its own id (open_client without client_id generates one and keeps "
        "it in the store), or call client.reset() to continue this id after the server's "
        "events"
    )
