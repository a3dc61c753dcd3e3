"""Connecting to PostgreSQL the trio_sync way, and its errors in trio_sync's words.

psycopg is imported only here and in the modules that use it, and only when a
``postgresql://`` URL is given: SQLite users need nothing more than the standard library.
No psycopg exception reaches a user: :func:`translate_errors` maps them to the
:class:`~trio_sync.StoreError` family, naming the database without its password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._errors import InvalidDatabase, StoreError, StoreFull, StoreReadOnly, StoreVersionError

if TYPE_CHECKING:
    import psycopg

#: Every trio_sync table lives in this PostgreSQL schema, so the database can be shared
#: with an application's own tables.
PG_SCHEMA = "trio_sync"

#: Seconds to wait for a connection (a node must not hang at start on a dead address).
CONNECT_TIMEOUT = 5


#: The URL schemes of a PostgreSQL database (matched in any case, as URL schemes are).
_SCHEMES = ("postgresql://", "postgres://")

#: The start of a libpq ``key=value`` connection string (``host=... password=...``).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_KEY_VALUE = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


def is_postgres_url(db: str) -> bool:
    """True when ``db`` names a PostgreSQL database rather than a SQLite file (the scheme
    in any case: ``POSTGRESQL://`` too)."""
    return db[: len(_SCHEMES[0])].lower().startswith(_SCHEMES)


def postgres_url_of(db: str) -> str | None:
    """``db`` as a PostgreSQL URL with its scheme in lower case (libpq knows only that
    spelling), or None when ``db`` is a SQLite file path.

    What is neither is refused, never taken for a file name (a file would be created in
    the current folder, and the server would run on an empty log, with the password in
    its file name).

    Raises:
        InvalidDatabase: ``db`` is a URL of another scheme (``sqlite:///x``,
            ``postgresql+psycopg://...``) or a libpq ``key=value`` string. The message
            never holds a password.
    """
    if is_postgres_url(db):
        scheme, separator, rest = db.partition("://")
        return scheme.lower() + separator + rest
    if "://" in db:
        scheme = db.partition("://")[0]
        what = f"a {scheme!r} URL" if _SCHEME.fullmatch(scheme) else "not a postgresql:// URL"
        raise InvalidDatabase(
            f"{redact(db)!r} is {what}: the server log is a SQLite file path or a "
            "postgresql:// URL (postgresql://user@host:port/dbname)"
        )
    if _KEY_VALUE.match(db):
        raise InvalidDatabase(
            f"{redact(db)!r} looks like a key=value connection string: give a "
            "postgresql://user@host:port/dbname URL (or, for a SQLite file whose name "
            "holds '=', a path such as ./name)"
        )
    return None


def redact(text: str) -> str:
    """``text`` with any password in it replaced by ``***`` (for messages): a URL's
    (``scheme://user:PASSWORD@host``, up to its last ``@``: the password may hold one)
    and a ``password=`` parameter's (a URL's query or a key=value string)."""
    text = re.sub(r"(://[^:/@]*:).*@", r"\1***@", text, flags=re.DOTALL)
    return re.sub(
        r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)", r"\1***", text, flags=re.IGNORECASE
    )


def require_psycopg() -> None:
    """Raises:
    StoreError: psycopg (the ``postgres`` extra) is not installed."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StoreError(
            "a postgresql:// database needs psycopg: pip install 'trio_sync[postgres]'"
        ) from None


def describe(url: str) -> str:
    """The database of ``url`` for messages and logs: host, port and name, no password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "postgresql://?"
    host = parts.get("host") or "localhost"
    if str(host).startswith("/"):
        host = f"[{host}]"
    port = parts.get("port") or 5432
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


def check_url(url: str) -> None:
    """Checks that ``url`` can be parsed, without connecting.

    Raises:
        StoreError: It cannot (the message says why), or psycopg is missing.
    """
    require_psycopg()
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StoreError(f"not a usable PostgreSQL URL: {_first_line(exc)}") from None


def connect_options() -> dict[str, Any]:
    """What every connection is opened with: our schema first on the search path (so the
    SQL is the same as SQLite's), a bounded connect time, and the application name that
    ``pg_stat_activity`` shows."""
    return {
        "options": f"-c search_path={PG_SCHEMA}",
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "trio_sync",
    }


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A new connection to ``url``.

    Raises:
        StoreError: It cannot be opened (unreachable, refused, bad credentials).
    """
    require_psycopg()
    import psycopg

    with translate_errors(url):
        return psycopg.connect(url, autocommit=autocommit, **connect_options())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Maps psycopg and pool errors to trio_sync store errors that name the database."""
    import psycopg
    import psycopg_pool
    from psycopg import errors

    where = describe(url)
    try:
        yield
    except psycopg_pool.PoolTimeout:
        raise StoreError(
            f"database {where}: no connection within the timeout (is the database up?)"
        ) from None
    except errors.UndefinedTable as exc:
        raise StoreVersionError(
            f"database {where} has no (or an incomplete) trio_sync schema ({_first_line(exc)}):"
            f" run `trio-sync migrate --db URL`"
        ) from None
    except (errors.DiskFull, errors.OutOfMemory, errors.ProgramLimitExceeded) as exc:
        raise StoreFull(
            f"database {where} is full: {_first_line(exc)}; nothing was written"
        ) from None
    except (errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege) as exc:
        raise StoreReadOnly(f"database {where} cannot be written: {_first_line(exc)}") from None
    except psycopg.OperationalError as exc:
        raise StoreError(f"database {where} is unreachable: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"database {where}: {_first_line(exc)}") from None
