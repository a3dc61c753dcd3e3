"""``trio-sync migrate``: create or upgrade a server log's schema, and move a SQLite log
into PostgreSQL with its identities.

A server node never changes a PostgreSQL schema by itself (several start at once, and an
older node must not touch what newer ones use): this command is the only thing that does.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..store import ServerStore
from ..store._pg_connect import describe, is_postgres_url
from ._args import CommandError, db_path, sqlite_file


def add_parser(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade a server log's schema; copy a SQLite log into PostgreSQL",
        description="With --db: creates or upgrades the schema of the PostgreSQL log DB "
        "(a postgresql:// URL), or upgrades the existing SQLite log DB; safe to run again. "
        "With --from FILE: also copies the SQLite log FILE (every store, its events at their "
        "positions and its identity, so clients stay compatible) into the PostgreSQL log, "
        "which must hold no event yet. Stop the server on FILE first.",
    )
    migrate.add_argument(
        "--db",
        "--to",
        dest="db",
        required=True,
        type=db_path,
        help="the server log to migrate: postgresql://user@host:port/dbname or an existing "
        "SQLite file",
    )
    migrate.add_argument(
        "--from",
        dest="source",
        type=sqlite_file,
        metavar="FILE",
        help="a SQLite server log to copy into the PostgreSQL log --db",
    )
    migrate.set_defaults(run=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    if not is_postgres_url(args.db):
        if args.source:
            raise CommandError("--from copies into PostgreSQL: --db must be a postgresql:// URL")
        if not os.path.isfile(args.db):
            # Opening would create an empty log (and its folders) for a mistyped path, and
            # call it up to date. Like `status` on a missing store: a clear error instead.
            raise CommandError(
                f"no server log at {args.db!r}: nothing to migrate "
                "(trio-sync serve --db creates one)"
            )
        store = ServerStore.open(args.db)  # opening a SQLite log migrates it
        print(f"trio-sync migrate: {args.db} is up to date ({store.store_count()} store(s))")
        store.close()
        return 0
    from ..store._pg_schema import copy_from_sqlite, migrate

    # The source first: a file that cannot be copied (not a server log, in use by a
    # server) is refused before the target is touched. It stays open (and locked: no
    # server can start on it) until the copy is done.
    source = ServerStore.open(args.source) if args.source else None
    try:
        where = describe(args.db)
        before, after = migrate(args.db)
        if before == after:
            print(f"trio-sync migrate: {where} is up to date (schema version {after})")
        else:
            print(f"trio-sync migrate: {where}: schema version {before} -> {after}")
        if source is not None:
            copied = copy_from_sqlite(source, args.db)
            print(
                f"trio-sync migrate: copied {sum(copied.values())} event(s) of "
                f"{len(copied)} store(s) from {args.source} to {where}, identities kept"
            )
    finally:
        if source is not None:
            source.close()
    return 0
