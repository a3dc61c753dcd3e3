"""The file model: facts from the event log, and the local transfer state.

Facts (synced): ``file.created``, ``file.updated`` and ``file.deleted`` events carry a file's
id, path, content hash (SHA-256), size and metadata. Applied in server order, the last one
wins on every client. :class:`FileTable` folds them into the current :class:`FileInfo` of
each file; it is pure, like the rest of this module.

Local state (durable, never synced): per file and direction, a :class:`TransferState`.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from .._errors import InvalidEvent
from ..protocol import Event
from ..protocol._blob_messages import is_content_hash
from ..protocol._limits import HARD_MAX_DEPTH

FILE_CREATED = "file.created"
FILE_UPDATED = "file.updated"
FILE_DELETED = "file.deleted"
FILE_EVENTS = frozenset({FILE_CREATED, FILE_UPDATED, FILE_DELETED})

Direction = Literal["upload", "download"]
TransferStatus = Literal["pending", "queued", "in_progress", "done", "error"]


def _frozen_metadata(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(value))


@attrs.frozen
class FileInfo:
    """One file as the synced facts describe it.

    Attributes:
        id: The file's id (given by ``save``).
        path: The application's name for it (not a local path).
        content_hash: SHA-256 of its contents, in hex.
        size: Its size in bytes.
        metadata: Whatever the application attached (JSON values).
        deleted: True once a ``file.deleted`` event was applied.
        author: The client whose event set these contents (it is the one that must
            upload them).
    """

    id: str
    path: str
    content_hash: str
    size: int
    metadata: Mapping[str, object] = attrs.field(factory=dict, converter=_frozen_metadata)
    deleted: bool = False
    author: str = ""


@attrs.frozen
class TransferState:
    """One direction of one file's transfer, on this client.

    Attributes:
        status: "pending" (not needed yet), "queued", "in_progress", "done" or "error"
            (given up after the retries; reset to "queued" when the client opens again).
        content_hash: The contents this transfer moves.
        attempts: Failed attempts so far.
        last_error: The latest failure, in words.
    """

    status: TransferStatus
    content_hash: str
    attempts: int = 0
    last_error: str | None = None


@attrs.frozen
class FileState:
    """``files.state(file_id)``: both directions (None where nothing was ever needed)."""

    upload: TransferState | None
    download: TransferState | None


def new_file_id(rng: random.Random) -> str:
    """A random id drawn from ``rng`` (the client's seeded source: simulated runs replay)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4).hex


def file_event_args(info: FileInfo) -> dict[str, object]:
    """The args of a created or updated event: the file's whole description, so that the
    last event the server ordered is the whole truth."""
    return {
        "id": info.id,
        "path": info.path,
        "hash": info.content_hash,
        "size": info.size,
        "metadata": dict(info.metadata),
    }


def check_metadata(metadata: object, max_values: int) -> dict[str, object]:
    """The metadata of a save or update, as a new dict, if every key in it (nested ones
    included) is a ``str``: metadata travels as JSON, where an object's keys are strings,
    so ``{1: "a"}`` would silently come back as ``{"1": "a"}`` (and ``{1: .., "1": ..}``
    lose a value). Values are checked with the event (JSON values only).

    Raises:
        TypeError: ``metadata`` is not a mapping, or a key is not a ``str`` (the message
            says where).
        InvalidEvent: It holds itself, nests deeper than any event may, or holds more
            than ``max_values`` values once written out (a value held twice counts twice:
            a few lists, each holding the last one twice, make gigabytes of JSON). Each
            value takes a byte at least: more values than an event's byte limit are over
            it, refused here before the encoding builds them.
    """
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"metadata is a mapping with str keys (a dict), not {type(metadata).__name__}"
        )
    # Iterative (a deeply nested value is refused here, not by a RecursionError), each
    # container walked once (its count kept for the next time it is met), the containers
    # being walked kept apart to find one inside itself.
    counted: dict[int, int] = {}
    inside: set[int] = set()
    totals = [0]  # the values counted so far in each container being walked
    stack: list[tuple[object, str, bool]] = [(metadata, "metadata", False)]
    while stack:
        value, where, leaving = stack.pop()
        if leaving:
            inside.discard(id(value))
            counted[id(value)] = total = totals.pop()
            totals[-1] += total
        elif not isinstance(value, (Mapping, list, tuple)):
            totals[-1] += 1
        elif id(value) in inside:
            raise InvalidEvent(f"metadata holds itself at {where}: it cannot be written out")
        elif id(value) in counted:
            totals[-1] += counted[id(value)]
        elif len(inside) >= HARD_MAX_DEPTH:
            raise InvalidEvent(f"metadata nests deeper than {HARD_MAX_DEPTH} levels at {where}")
        else:
            inside.add(id(value))
            totals.append(1)
            stack.append((value, where, True))
            stack.extend(_items(value, where))
        if totals[-1] > max_values:
            raise InvalidEvent(
                f"metadata holds more than {max_values:,} values once written out: over "
                "the event size limit"
            )
    return dict(metadata)


def _items(
    container: Mapping[object, object] | list[object] | tuple[object, ...], where: str
) -> list[tuple[object, str, bool]]:
    """The values in ``container``, each with where it is.

    Raises:
        TypeError: A key is not a ``str``.
    """
    if not isinstance(container, Mapping):
        return [(item, f"{where}[{index}]", False) for index, item in enumerate(container)]
    for key in container:
        if not isinstance(key, str):
            raise TypeError(
                f"metadata keys must be str, not {type(key).__name__}: {key!r} at "
                f"{where} (it would arrive as the string {str(key)!r})"
            )
    return [(item, f"{where}[{key!r}]", False) for key, item in container.items()]


def size_problem(held: int | None, said: int) -> str | None:
    """Why a file whose contents are ``held`` bytes, and whose facts say ``said``, cannot
    be had (its event was committed by hand, or by a buggy peer); None when they agree,
    or when its contents are not held (None)."""
    if held is None or held == said:
        return None
    return (
        f"its contents are {held} bytes but its event says {said}: the event names a wrong "
        "size for them, so they cannot be had"
    )


@attrs.frozen
class LocalCopyProblem:
    """What is wrong with a local copy read for ``read()``: ``final`` when no other copy
    can do better (raised), else the copy rotted and is fetched again."""

    reason: str
    final: bool


def local_copy_problem(
    info: FileInfo, size: int, digest: str, upload: TransferState | None, client_id: str
) -> LocalCopyProblem | None:
    """What is wrong with the local copy of ``info``'s contents read as ``size`` bytes
    hashing to ``digest`` (None: nothing), given the ``upload`` row of this client
    (``client_id``)."""
    if digest == info.content_hash:
        # Sound, but not the size its fact says: that fact lies, and every client's
        # download (or read) of it says so.
        problem = size_problem(size, info.size)
        return None if problem is None else LocalCopyProblem(problem, True)
    if (
        info.author == client_id
        and upload is not None
        and upload.content_hash == info.content_hash
        and upload.status != "done"
    ):
        # Rotten, saved here and never uploaded: no copy exists anywhere else to fetch.
        # Kept for the upload to find corrupt and say so (its row, the status). (Contents
        # another client saved came from the server: fetched again.)
        return LocalCopyProblem(
            "the local copy of its contents is corrupt and they were never uploaded: save "
            "the file again",
            True,
        )
    return LocalCopyProblem("the local copy of its contents is corrupt", False)


#: The SHA-256 of empty contents.
EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def _parse(event: Event) -> FileInfo | str | None:
    """A created/updated event's FileInfo, a deleted event's id, or None when the event
    is not a well-formed file fact (another application's event, or a buggy peer's: it
    is skipped, never trusted)."""
    args = event.args
    file_id = args.get("id")
    if type(file_id) is not str or not file_id:
        return None
    if event.name == FILE_DELETED:
        return file_id
    path, content_hash, size = args.get("path"), args.get("hash"), args.get("size")
    metadata = args.get("metadata", {})
    if (
        type(path) is not str
        or not is_content_hash(content_hash)
        or type(size) is not int
        or size < 0
        or type(metadata) is not dict
        # Empty contents have one hash, and it names nothing else: a fact that says
        # otherwise (a buggy peer's) names contents nobody can ever upload.
        or (size == 0) != (content_hash == EMPTY_HASH)
    ):
        return None
    assert isinstance(content_hash, str)
    return FileInfo(file_id, path, content_hash, size, metadata, author=event.client_id)


class FileTable:
    """Every file's current facts, folded from file events in order."""

    def __init__(self, files: Mapping[str, FileInfo] | None = None) -> None:
        self.files: dict[str, FileInfo] = dict(files or {})

    def apply(self, event: Event) -> str | None:
        """Applies one event; returns the id of the file it changed (None: no change)."""
        if event.name not in FILE_EVENTS:
            return None
        parsed = _parse(event)
        if parsed is None:
            return None
        if isinstance(parsed, str):
            current = self.files.get(parsed)
            if current is None or current.deleted:
                return None
            self.files[parsed] = attrs.evolve(current, deleted=True)
            return parsed
        current = self.files.get(parsed.id)
        if current is not None and current.deleted:
            return None  # a deleted file stays deleted
        if event.name == FILE_UPDATED and current is None:
            return None  # an update of a file never created
        self.files[parsed.id] = parsed
        return parsed.id

    def apply_all(self, events: Iterable[Event]) -> set[str]:
        changed = set()
        for event in events:
            file_id = self.apply(event)
            if file_id is not None:
                changed.add(file_id)
        return changed

    def copy(self) -> FileTable:
        return FileTable(self.files)

    def live_hashes(self) -> set[str]:
        return {info.content_hash for info in self.files.values() if not info.deleted}


def rows_for_own_contents(
    info: FileInfo, download: TransferState | None, client_id: str
) -> list[tuple[Direction, TransferState]] | None:
    """What to write instead of an upload row for other contents than the file's: when
    the current contents are this client's own, that row was left for contents never
    recorded (a crash or a close between a recording's rows and its event), so the upload
    goes back to the current contents, and the download is done for them (they are here).
    None: another client's contents won; the row goes, ours need not reach the server."""
    if info.author != client_id:
        return None
    rows: list[tuple[Direction, TransferState]] = [
        ("upload", TransferState("queued", info.content_hash))
    ]
    if download is not None and download.content_hash != info.content_hash:
        rows.append(("download", TransferState("done", info.content_hash)))
    return rows
