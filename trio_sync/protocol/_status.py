"""The sync status a person can trust, derived from facts by one pure function."""

from __future__ import annotations

from typing import Literal

import attrs

from ._progress import CatchUpProgress

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
        last_synced_at: Wall-clock time (seconds since the epoch) of the last moment this
            client was "synced", kept in the store across restarts (None: never).
        connect_attempts: Connection attempts since the last one that succeeded (0 while
            connected).
        since: Wall-clock time at which ``state`` took its current value.
        progress: While catching up with the server's history: events done and total,
            bytes, rate and ETA (None otherwise).
        uploads_pending: Files whose contents are not on the server yet (queued or
            moving); "synced" needs none, so that every other client can get every file.
        downloads_pending: Files whose contents this client still has to fetch.
        file_bytes_left: Bytes of those transfers not moved yet.
        downloads_failed: Files whose download gave up here (out of retries: a full
            disk, say): their contents are not here until they are tried again
            (``FileOptions.retry_given_up_every``) or ``files.read()`` asks. The other
            clients are not affected: no effect on ``state``.
        downloads_waiting_for_upload: Of ``downloads_pending``, those the server cannot
            serve yet: their contents are still to be uploaded by the client that saved
            them (which may be offline, or may have given up: then its status is
            "stuck" and says why). Retried without counting attempts.
        waiting_for_uploads_from: The clients that saved the contents those downloads
            wait for (sorted client ids): the ones to bring online, or to look at.
    """

    state: StatusState
    pending: int
    upstream_head: int
    server_head: int | None
    connected: bool
    last_error: str | None = None
    last_synced_at: float | None = None
    connect_attempts: int = 0
    since: float | None = None
    progress: CatchUpProgress | None = None
    uploads_pending: int = 0
    downloads_pending: int = 0
    file_bytes_left: int = 0
    downloads_failed: int = 0
    downloads_waiting_for_upload: int = 0
    waiting_for_uploads_from: tuple[str, ...] = ()


@attrs.frozen
class FileTransfers:
    """The file transfers' part of the facts the status is derived from."""

    uploads_pending: int = 0
    downloads_pending: int = 0
    bytes_left: int = 0
    #: Uploads that gave up (refused for good, out of retries, the local copy gone):
    #: other clients can never get those files, so the client is "stuck", not green.
    uploads_failed: int = 0
    upload_error: str | None = None
    downloads_failed: int = 0
    downloads_waiting_for_upload: int = 0
    waiting_for_uploads_from: tuple[str, ...] = ()


NO_FILE_TRANSFERS = FileTransfers()


def derive_state(
    phase: ConnectionPhase,
    *,
    pending: int,
    upstream_head: int,
    server_head: int | None,
    stuck: bool,
    failing_fast: bool = False,
    uploads_pending: int = 0,
    uploads_failed: int = 0,
) -> StatusState:
    """The state alone (cheap: the client calls it on every change, to see when it moves).
    See :func:`derive_status`."""
    if phase == "incompatible":
        return phase
    if failing_fast or uploads_failed:
        return "stuck"
    if phase != "connected":
        return phase
    if stuck:
        return "stuck"
    if (
        pending == 0
        and uploads_pending == 0  # green means the other clients can get every file
        and server_head is not None
        and upstream_head >= server_head
    ):
        return "synced"
    return "syncing"


def _since(
    state: StatusState, previous: SyncStatus | None, since: float | None, now: float | None
) -> float | None:
    if previous is None:
        return since if since is not None else now
    return previous.since if previous.state == state else now


def derive_status(
    phase: ConnectionPhase,
    *,
    pending: int,
    upstream_head: int,
    server_head: int | None,
    stuck: bool,
    last_error: str | None,
    failing_fast: bool = False,
    connect_attempts: int = 0,
    progress: CatchUpProgress | None = None,
    last_synced_at: float | None = None,
    previous: SyncStatus | None = None,
    since: float | None = None,
    now: float | None = None,
    files: FileTransfers = NO_FILE_TRANSFERS,
) -> SyncStatus:
    """Computes the status from the facts (no I/O: the wall-clock time ``now`` is passed
    in, with the ``previous`` status for ``since`` and ``last_synced_at``).

    Args:
        since: When the state took its value, if known and no ``previous`` is given.
        failing_fast: Connections keep failing soon after opening (or a push was refused
            for a reason retrying cannot fix): "stuck", even while not connected, since
            waiting will not help.
    """
    state = derive_state(
        phase,
        pending=pending,
        upstream_head=upstream_head,
        server_head=server_head,
        stuck=stuck,
        failing_fast=failing_fast,
        uploads_pending=files.uploads_pending,
        uploads_failed=files.uploads_failed,
    )
    if previous is not None:
        last_synced_at = max(last_synced_at or 0.0, previous.last_synced_at or 0.0) or None
    if state == "synced" and now is not None:
        last_synced_at = now
    return SyncStatus(
        state=state,
        pending=pending,
        upstream_head=upstream_head,
        server_head=server_head,
        connected=phase == "connected",
        last_error=last_error or files.upload_error,
        last_synced_at=last_synced_at,
        connect_attempts=0 if phase == "connected" else connect_attempts,
        since=_since(state, previous, since, now),
        progress=progress if state == "syncing" else None,
        uploads_pending=files.uploads_pending,
        downloads_pending=files.downloads_pending,
        file_bytes_left=files.bytes_left,
        downloads_failed=files.downloads_failed,
        downloads_waiting_for_upload=files.downloads_waiting_for_upload,
        waiting_for_uploads_from=files.waiting_for_uploads_from,
    )
