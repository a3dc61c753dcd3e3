"""``trio-sync status --store PATH``: a client store's state, without connecting."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import attrs
from rich.console import Console
from rich.table import Table

from ..files._state import TransferSummary, inspect_transfers
from ..store import StoreSummary, inspect_store


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="a client store's state (ids, heads, pending, last sync), without connecting",
    )
    status.add_argument("--store", required=True, help="the client's SQLite file")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    status.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    summary = inspect_store(args.store)
    # Where the client keeps it unless FileOptions.state_path says otherwise.
    files = inspect_transfers(f"{args.store}.files")
    if args.json:
        print_json(summary, files, sys.stdout)
    else:
        print_table(summary, Console(), now=time.time(), files=files)
    return 0


def print_json(summary: StoreSummary, files: TransferSummary | None, out: TextIO) -> None:
    facts = attrs.asdict(summary)
    facts["files"] = None if files is None else attrs.asdict(files)
    json.dump(facts, out, indent=2, sort_keys=True)
    out.write("\n")


def _transfers(counts: dict[str, int]) -> str:
    """``"2 queued, 1 error (of 40)"``: the files not done, by status."""
    not_done = ("pending", "queued", "in_progress", "error")
    left = [f"{counts[status]} {status}" for status in not_done if status in counts]
    total = sum(counts.values())
    return f"{', '.join(left)} (of {total})" if left else f"all {total} done"


def ago(stamp: float | None, now: float) -> str:
    """``"3m 12s ago (2026-11-23 10:01:02 UTC)"``, or "never"."""
    if stamp is None:
        return "never"
    seconds = max(0, int(now - stamp))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m"] if minutes or hours or days else []
    parts.append(f"{seconds}s")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return f"{' '.join(parts[:2])} ago ({when})"


def _oldest(summary: StoreSummary, now: float) -> str:
    if summary.pending == 0:
        return "none"
    if summary.oldest_pending_at is None:
        return "unknown (committed before trio_sync kept commit times)"
    return ago(summary.oldest_pending_at, now)


def print_table(
    summary: StoreSummary, console: Console, *, now: float, files: TransferSummary | None = None
) -> None:
    table = Table(title=f"trio_sync client store {summary.path}", show_header=False)
    table.add_column("fact", style="bold")
    table.add_column("value")
    unacked = max(0, summary.next_client_seq - 1 - summary.acked_through)
    rows = [
        ("client id", summary.client_id or "?"),
        ("server id", summary.server_id or "none yet (never connected)"),
        ("confirmed head", f"{summary.upstream_head} ({summary.confirmed} events held)"),
        ("pending", f"{summary.pending} ({unacked} not acknowledged by the server)"),
        ("oldest pending", _oldest(summary, now)),
        ("last synced", ago(summary.last_synced_at, now)),
        ("schema", f"v{summary.schema_version}, {summary.size_bytes:,} bytes"),
    ]
    if files is None:
        rows.append(("files", "no transfer state (no file saved or fetched here)"))
    else:
        rows.append(("file uploads", _transfers(files.uploads)))
        rows.append(("file downloads", _transfers(files.downloads)))
        if files.upload_error is not None:
            rows.append(("upload given up", files.upload_error))
    for fact, value in rows:
        table.add_row(fact, value)
    console.print(table)
