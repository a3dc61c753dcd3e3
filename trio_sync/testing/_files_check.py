"""What every simulated run with files must end with: every client holds every live
file's exact contents, and all agree on the files."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ..client import Client


def files_settled(client: Client) -> bool:
    """Nothing to transfer and every live file's contents here."""
    files = client.files
    return files.executor.is_idle() and all(
        files.has_contents(info.id) for info in files.list() if not info.deleted
    )


def check_files(clients: Mapping[str, Client]) -> list[str]:
    """The problems with the files of the clients open at the end (none when all hold
    the same files with their exact contents)."""
    problems: list[str] = []
    tables = {name: client.files.list() for name, client in clients.items()}
    if len({repr(table) for table in tables.values()}) > 1:
        problems.append(f"clients disagree on the files: {sorted(tables)}")
    for name, client in clients.items():
        for info in tables[name]:
            if info.deleted:
                continue
            try:
                data = client.files.blobs.read(info.content_hash)
            except KeyError:
                problems.append(f"{name}: file {info.id} ({info.path}) has no contents")
                continue
            if hashlib.sha256(data).hexdigest() != info.content_hash or len(data) != info.size:
                problems.append(f"{name}: file {info.id} ({info.path}) has wrong contents")
    return problems
