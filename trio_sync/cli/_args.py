"""What the commands share: argument types that refuse bad input up front (an argparse
error, exit code 2), and the error a command raises for input it cannot use (exit 1)."""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable

from .._errors import TrioSyncError
from ..protocol import INT64_MAX, MAX_CLIENT_ID_LENGTH, TokenError, check_identifier, check_secret
from ..server._blob_backends import folder_problem
from ..store import valid_store_id
from ..store._pg_connect import check_url, is_postgres_url, postgres_url_of, redact


class CommandError(TrioSyncError):
    """A command's input cannot be used (the message says why)."""


def read_secrets(path: str) -> tuple[bytes, ...]:
    """The secrets in a secret file: one per line, the first signs new tokens, every one
    verifies (rotation); blank lines and lines starting with # are ignored.

    Raises:
        CommandError: The file cannot be read, holds no secret, or a secret is too short.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise CommandError(f"the secret file {path!r} is not a regular file")
        with open(path, "rb") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read the secret file {path!r}: {exc.strerror}") from None
    secrets = tuple(
        line.strip() for line in lines if line.strip() and not line.strip().startswith(b"#")
    )
    if not secrets:
        raise CommandError(f"the secret file {path!r} holds no secret")
    for secret in secrets:
        try:
            check_secret(secret)
        except TokenError as exc:
            raise CommandError(f"the secret file {path!r}: {exc}") from None
    if mode & 0o077:
        print(
            f"trio-sync: warning: {path} can be read by other users (chmod 600 it)",
            file=sys.stderr,
        )
    return secrets


def port(text: str) -> int:
    value = count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


_SIZE = re.compile(r"(\d+)\s*(?:([kmgt])(?:ib)?)?", re.IGNORECASE)
_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """A number of bytes: a whole number, or one with a binary unit (``10G``, ``512MiB``:
    K, M, G and T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (a whole number of bytes, or with K, M, G or T: 10G)"
        )
    value = int(match.group(1)) * _UNITS.get((match.group(2) or "").lower(), 1)
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit in 64 bits")
    return value


def version(text: str) -> int:
    value = count(text)
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value} does not fit in 64 bits")
    return value


def db_path(text: str) -> str:
    """A SQLite file path or a ``postgresql://`` URL (parsed here, not connected to)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the database path is empty")
    if text[: len("postgresql:")].lower().startswith(("postgresql:", "postgres:")):
        return postgres_url(text)
    try:
        postgres_url_of(text)  # neither a URL of another scheme nor key=value
    except TrioSyncError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if text == ":memory:" or text.startswith("file:"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a file path: a server's log must survive a restart"
        )
    return text


def postgres_url(text: str) -> str:
    """A ``postgresql://`` URL that psycopg can parse (psycopg must be installed), its
    scheme in lower case."""
    if not is_postgres_url(text):
        raise argparse.ArgumentTypeError(
            f"{redact(text)!r} is not a PostgreSQL URL (postgresql://user@host:port/dbname)"
        )
    url = postgres_url_of(text)
    assert url is not None
    try:
        check_url(url)
    except TrioSyncError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return url


def sqlite_file(text: str) -> str:
    """An existing SQLite file (a log to copy from)."""
    path = db_path(text)
    if is_postgres_url(path):
        raise argparse.ArgumentTypeError(f"{redact(text)!r}: expected a SQLite file, not a URL")
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist or is not a file")
    return path


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, non-negative number")
    return value


def lifetime(text: str) -> float:
    """Seconds a token stays valid: finite and at least 1 (tokens count whole seconds:
    less could be expired when printed)."""
    value = seconds(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} seconds: tokens count whole seconds, so under 1 it could be expired "
            "when printed"
        )
    return value


def folder(text: str) -> str:
    """A folder this process can write in, or a path where one can be made."""
    problem = folder_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def store_id(text: str) -> str:
    if not valid_store_id(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a store id (letters, digits, _ . -, at most 64)"
        )
    return text


def client_id(text: str) -> str:
    try:
        return check_identifier(text, "client id", MAX_CLIENT_ID_LENGTH)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    """A whole number of at least 1."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def seed(text: str) -> int:
    """Any whole number (seeds may be negative: Python's random takes them)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def new_file(text: str) -> str:
    """A file to write: its folder must exist and be writable now, not after the run."""
    folder = os.path.dirname(os.path.abspath(text)) or "."
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder!r} cannot be written")
    return text


def bounded(limit: int) -> Callable[[str], int]:
    """A whole number from 1 to ``limit``."""

    def check(text: str) -> int:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{value} is more than {limit:,}")
        return value

    return check
