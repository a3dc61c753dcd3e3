"""A real PostgreSQL for the tests: one throwaway cluster per session (the machine's own
binaries), a fresh database per test. Skipped, with the reason, only where PostgreSQL is
not installed (``.ci/run`` installs it, so CI never skips)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trio_sync.testing._pg_cluster import PostgresCluster, find_postgres_bin


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")
    cluster = PostgresCluster(bindir, durable=False)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty database (not migrated)."""
    return pg_cluster.create_database()


@pytest.fixture
def pg_log(pg_url: str) -> str:
    """The URL of a fresh database with the trio_sync schema."""
    from trio_sync.store._pg_schema import migrate

    migrate(pg_url)
    return pg_url
