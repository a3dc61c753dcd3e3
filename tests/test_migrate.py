"""``trio-sync migrate`` and a node's start-up checks on a PostgreSQL log, run as a user
would: every mistake ends with one clear line and changes nothing."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import trio

import trio_sync
from trio_sync import InvalidDatabase, StoreError
from trio_sync.store import DEFAULT_STORE, PostgresStore, ServerStore, open_server_log

from .conftest import WAIT, ClientFactory
from .store.test_server_store import push

CLI = [sys.executable, "-m", "trio_sync.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr
    return result


def test_migrate_creates_the_schema_once(pg_url: str) -> None:
    first = cli("migrate", "--db", pg_url)
    assert first.returncode == 0, first.stderr
    assert "schema version 0 -> 1" in first.stdout
    again = cli("migrate", "--db", pg_url)
    assert again.returncode == 0 and "is up to date (schema version 1)" in again.stdout
    store = PostgresStore.open(pg_url)
    assert [info.store_id for info in store.stores()] == [DEFAULT_STORE]
    store.close()


async def test_migrate_from_sqlite_keeps_positions_and_identities(
    pg_url: str, tmp_path: Path, open_test_client: ClientFactory
) -> None:
    sqlite = str(tmp_path / "server.sqlite3")
    async with trio.open_nursery() as nursery:
        server: trio_sync.Server = await nursery.start(trio_sync.serve, sqlite)
        async with open_test_client(server.url, "A") as client:
            await client.commit("before", {"n": 1})
            with trio.fail_after(WAIT):
                await client.wait_synced()
        await server.shutdown()
    source = ServerStore.open(sqlite)
    todo = source.create_store("todo")
    source.apply_pushes([push("B", 1, 0, 1, 2, store="todo")])
    identities = {info.store_id: info.server_id for info in source.stores()}
    source.close()

    result = cli("migrate", "--from", sqlite, "--to", pg_url)
    assert result.returncode == 0, result.stderr
    assert "copied 3 event(s) of 2 store(s)" in result.stdout

    store = PostgresStore.open(pg_url)
    assert {info.store_id: info.server_id for info in store.stores()} == identities
    assert store.heads([DEFAULT_STORE, "todo"]) == {DEFAULT_STORE: 1, "todo": 2}
    assert store.store("todo") == todo.__class__("todo", todo.server_id, 2)
    store.close()
    # A client of the SQLite server goes on syncing with a PostgreSQL node: same identity.
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_sync.serve, pg_url)
        async with open_test_client(server.url, "A") as client:
            await client.commit("after", {"n": 2})
            with trio.fail_after(WAIT):
                await client.wait_synced()
            assert [(e.seq, e.name) for e in client.confirmed_events()] == [
                (1, "before"),
                (2, "after"),
            ]
        nursery.cancel_scope.cancel()

    # A second copy would merge two logs: refused, nothing changed.
    again = cli("migrate", "--from", sqlite, "--to", pg_url)
    assert again.returncode == 1 and "already holds 4 events" in again.stderr


def test_a_newer_schema_is_refused_by_migrate_and_serve(pg_log: str) -> None:
    with psycopg.connect(pg_log) as conn:
        conn.execute("UPDATE trio_sync.meta SET value = '99' WHERE key = 'schema_version'")
    for command in (("migrate", "--db", pg_log), ("serve", "--db", pg_log)):
        result = cli(*command)
        assert result.returncode == 1
        assert "schema version 99" in result.stderr and "upgrade trio_sync" in result.stderr


def test_serve_refuses_an_unmigrated_database_and_changes_nothing(pg_url: str) -> None:
    result = cli("serve", "--db", pg_url)
    assert result.returncode == 1
    assert "has no trio_sync schema: run `trio-sync migrate --db URL`" in result.stderr
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('trio_sync.meta')").fetchone() == (None,)


def test_an_unreachable_database_is_one_clear_line(pg_cluster: object) -> None:
    url = "postgresql://me:secret@127.0.0.1:1/app"
    for command in (("serve", "--db", url), ("migrate", "--db", url)):
        result = cli(*command)
        assert result.returncode == 1
        assert "postgresql://127.0.0.1:1/app is unreachable" in result.stderr
        assert "secret" not in result.stderr


def test_bad_urls_and_files_are_argument_errors(tmp_path: Path) -> None:
    for args, message in (
        (("serve", "--db", "postgresql://h/x?bogus=1"), "not a usable PostgreSQL URL"),
        (("migrate", "--db", "postgres://h/db", "--from", str(tmp_path / "no")), "does not exist"),
        (
            ("migrate", "--db", str(tmp_path / "a.sqlite3"), "--from", "postgresql://h/x"),
            "not a URL",
        ),
    ):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


BAD_DATABASES = (
    # What was tried: strings that name a database but not as a postgresql:// URL. Each
    # once became a SQLite file named after it (password included) in the current folder.
    ("postgresql+psycopg://me:S3cr#t/p@ss@127.0.0.1/app", "'postgresql+psycopg' URL"),
    ("sqlite:///server.sqlite3", "'sqlite' URL"),
    ("host=127.0.0.1 port=5432 user=postgres password=S3cr#t", "key=value connection string"),
)


def test_a_database_that_is_not_a_postgresql_url_is_refused_not_made_a_file(
    tmp_path: Path,
) -> None:
    for db, message in BAD_DATABASES:
        for args in (
            ("serve", "--db", db),
            ("migrate", "--db", db),
            ("migrate", "--from", db, "--to", "postgresql://h/x"),
        ):
            result = subprocess.run(
                [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
            )
            assert result.returncode == 2, (args, result.stderr)
            assert message in result.stderr and "S3cr" not in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file was made


async def test_serve_and_open_server_log_refuse_what_is_not_a_postgresql_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for db, message in BAD_DATABASES:
        with pytest.raises(InvalidDatabase, match=re.escape(message)) as caught:
            open_server_log(db)
        assert "S3cr" not in str(caught.value)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, StoreError)
        with pytest.raises(InvalidDatabase, match=re.escape(message)):
            await trio_sync.serve(db)
    assert os.listdir(tmp_path) == []


def test_the_url_scheme_is_matched_in_any_case(pg_log: str) -> None:
    upper = "POSTGRESQL" + pg_log[len("postgresql") :]
    result = cli("migrate", "--db", upper)
    assert result.returncode == 0, result.stderr
    assert "is up to date (schema version 1)" in result.stdout
    store = open_server_log("Postgres" + pg_log[len("postgresql") :])
    assert isinstance(store, PostgresStore)
    store.close()


def test_a_schema_version_that_cannot_be_read_is_refused_and_nothing_changes(
    pg_log: str,
) -> None:
    for tamper, shown in (
        ("UPDATE trio_sync.meta SET value = 'garbage' WHERE key = 'schema_version'", "garbage"),
        ("DELETE FROM trio_sync.meta WHERE key = 'schema_version'", "no schema_version row"),
    ):
        with psycopg.connect(pg_log, autocommit=True) as conn:
            conn.execute(tamper.encode())
            before = conn.execute("SELECT * FROM trio_sync.meta ORDER BY key").fetchall()
        for command in (("migrate", "--db", pg_log), ("serve", "--db", pg_log)):
            result = cli(*command)  # no traceback
            assert result.returncode == 1, result.stderr
            assert "cannot be trusted" in result.stderr and shown in result.stderr
        with psycopg.connect(pg_log) as conn:
            assert conn.execute("SELECT * FROM trio_sync.meta ORDER BY key").fetchall() == before
            conn.execute("DELETE FROM trio_sync.meta WHERE key = 'schema_version'")
            conn.execute("INSERT INTO trio_sync.meta VALUES ('schema_version', '1')")


def test_migrate_from_a_bad_source_changes_nothing_on_the_target(
    pg_url: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    result = cli("migrate", "--from", str(other), "--to", pg_url)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""  # not "is up to date", nor a new schema version
    with psycopg.connect(pg_url) as pg:
        assert pg.execute("SELECT to_regclass('trio_sync.meta')").fetchone() == (None,)


def test_migrate_of_a_sqlite_log_that_does_not_exist_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # Tried: trio-sync migrate --db nosuch/dir/x.sqlite3. It made the folders and a new
    # empty log, and said the log "is up to date".
    result = subprocess.run(
        [*CLI, "migrate", "--db", "nosuch/dir/x.sqlite3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr == (
        "trio-sync migrate: no server log at 'nosuch/dir/x.sqlite3': nothing to migrate "
        "(trio-sync serve --db creates one)\n"
    )
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
    # A log that is there is still migrated (opened, and found up to date).
    ServerStore.open(str(tmp_path / "server.sqlite3")).close()
    there = cli("migrate", "--db", str(tmp_path / "server.sqlite3"))
    assert there.returncode == 0 and "is up to date (1 store(s))" in there.stdout
