"""The ``trio-sync`` command: one module per subcommand, each adding its own parser."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from .._errors import TrioSyncError
from . import _bench, _demo, _migrate, _replay, _serve, _status, _token


class _Parser(argparse.ArgumentParser):
    """A parser that says a flag is unknown before it says a command is missing.

    argparse checks a required command (a subparser) before it looks at unknown flags:
    ``trio-sync --bogus`` said only "the following arguments are required: command". Here
    the command is checked after them. The commands' parsers are of this class too (``bench``
    has commands of its own).
    """

    _command: str | None = None

    def add_subparsers(self, **kwargs: Any) -> Any:
        if kwargs.pop("required", False):
            self._command = kwargs["dest"]  # checked in parse_known_args, after the flags
        return super().add_subparsers(**kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            # All that follows a command is its parser's: what it does not know, nobody does.
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        if self._command is not None and getattr(parsed, self._command, None) is None:
            self.error(f"the following arguments are required: {self._command}")
        return parsed, unknown


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    from .. import __version__

    main_parser = _Parser(
        prog="trio-sync", description="A local-first event-log sync engine for Trio."
    )
    main_parser.add_argument("--version", action="version", version=f"trio-sync {__version__}")
    commands = main_parser.add_subparsers(dest="command", required=True)
    for command in (_serve, _migrate, _token, _status, _demo, _replay, _bench):
        command.add_parser(commands)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sync`` command; returns the exit code.

    Every input is checked up front (an argparse error, exit 2); a failure says what went
    wrong in one line (exit 1); Ctrl-C ends quietly (exit 130).
    """
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except TrioSyncError as exc:
        print(f"trio-sync {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _quiet_stranded_generators()
        return 130
    except BaseExceptionGroup as group:
        # Trio's nurseries wrap what their tasks raised: unwrap what we would handle bare.
        if group.subgroup(KeyboardInterrupt) is not None:
            _quiet_stranded_generators()
            return 130
        errors = group.subgroup(TrioSyncError)
        if errors is not None:
            print(f"trio-sync {args.command}: {_first_leaf(errors)}", file=sys.stderr)
            return 1
        if _only(group, BrokenPipeError):
            _silence_stdout()
            return 0
        if _only(group, OSError):
            return _os_failure(args.command, _first_leaf(group))
        raise
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, and nobody to say it to.
        _silence_stdout()
        return 0
    except OSError as exc:
        return _os_failure(args.command, exc)


def _only(group: BaseExceptionGroup[BaseException], kind: type[BaseException]) -> bool:
    """Whether every leaf of ``group`` is a ``kind`` or a cancellation it caused."""
    _, rest = group.split((kind, trio.Cancelled))
    return rest is None


def _os_failure(command: str, exc: BaseException) -> int:
    # The stores and the network map their OS errors to trio_sync's own; what is left is
    # mostly writing the output (stdout on a full disk, say): one line, no traceback.
    try:
        sys.stdout.flush()
    except OSError:
        _silence_stdout()  # stdout itself failed: Python's flush at exit would fail again
    print(f"trio-sync {command}: {exc}", file=sys.stderr)
    return 1


def _quiet_stranded_generators() -> None:
    """Ctrl-C can land between an ``async with`` entering a context manager made by a
    generator (``open_client``) and the block starting: that generator stays suspended,
    and when it is collected after the run, Trio's finalizer can only complain that the
    run has exited ("Exception ignored ... RunFinishedError"). The run is over and nothing
    it committed is lost, so the exit stays quiet: that one complaint is dropped."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets_stranded_generators", False):
        return  # once per process: main() may run again in it (tests do)

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, trio.RunFinishedError):
            previous(unraisable)

    hook.quiets_stranded_generators = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _silence_stdout() -> None:
    # Python flushes stdout at exit; with the pipe gone that would print another error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


__all__ = ["main", "parser"]
