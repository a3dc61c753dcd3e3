"""The sync status a person can trust, derived from facts by one pure function."""

from __future__ import annotations

from typing import Literal

import attrs

StatusState = Literal["disconnected", "connecting", "synced", "syncing", "stuck", "incompatible"]
ConnectionPhase = Literal["disconnected", "connecting", "connected", "incompatible"]


@attrs.frozen
class SyncStatus:
    """A snapshot of a client's sync state.

    Attributes:
        state: ``"synced"`` only when connected, nothing is waiting for the server's
            acknowledgement and the local head equals the server head: both directions
            work and nothing is pending. ``"syncing"`` when connected with work left;
            ``"stuck"`` when connected but a direction has made no progress for several
            heartbeats; ``"disconnected"`` / ``"connecting"`` as they say;
            ``"incompatible"`` when the server cannot sync with this client (other schema,
            or its database was rebuilt).
        pending: Own events the server has not acknowledged yet.
        upstream_head: The last global seq applied locally.
        server_head: The server's head as last heard (None before the first contact).
        connected: A connection is up and the handshake is done.
        last_error: The latest problem, in words (None when all is well).
        uploads_pending: Files whose contents are not on the server yet (queued or
            moving); "synced" needs none, so that every other client can get every file.
        downloads_pending: Files whose contents this client still has to fetch.
        file_bytes_left: Bytes of those transfers not moved yet.
    """

    state: StatusState
    pending: int
    upstream_head: int
    server_head: int | None
    connected: bool
    last_error: str | None = None
    uploads_pending: int = 0
    downloads_pending: int = 0
    file_bytes_left: int = 0


@attrs.frozen
class FileTransfers:
    """The file transfers' part of the facts the status is derived from."""

    uploads_pending: int = 0
    downloads_pending: int = 0
    bytes_left: int = 0


NO_FILE_TRANSFERS = FileTransfers()


def derive_status(
    phase: ConnectionPhase,
    *,
    pending: int,
    upstream_head: int,
    server_head: int | None,
    stuck: bool,
    last_error: str | None,
    files: FileTransfers = NO_FILE_TRANSFERS,
) -> SyncStatus:
    """Computes the status from the facts (no I/O, no clock)."""
    state: StatusState
    if phase != "connected":
        state = phase
    elif stuck:
        state = "stuck"
    elif (
        pending == 0
        and files.uploads_pending == 0
        and server_head is not None
        and upstream_head >= server_head
    ):
        state = "synced"
    else:
        state = "syncing"
    return SyncStatus(
        state=state,
        pending=pending,
        upstream_head=upstream_head,
        server_head=server_head,
        connected=phase == "connected",
        last_error=last_error,
        uploads_pending=files.uploads_pending,
        downloads_pending=files.downloads_pending,
        file_bytes_left=files.bytes_left,
    )
