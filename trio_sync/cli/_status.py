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
    if args.json:
        print_json(summary, sys.stdout)
    else:
        print_table(summary, Console(), now=time.time())
    return 0


def print_json(summary: StoreSummary, out: TextIO) -> None:
    json.dump(attrs.asdict(summary), out, indent=2, sort_keys=True)
    out.write("\n")


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


def print_table(summary: StoreSummary, console: Console, *, now: float) -> None:
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
    for fact, value in rows:
        table.add_row(fact, value)
    console.print(table)
