"""A store file has one name: a hard link to it is refused.

SQLite keeps a database's write-ahead log (``-wal``) and shared memory (``-shm``) beside
the name it was opened by, and trio_sync its lock file too. Under a second name a store
takes no lock against the first and does not see the commits still in the first name's
log: a second writer would lose its commits, a reopen by the other name after a crash
would miss events. So a file with more than one name is refused, before anything is
read or written, with a message that says which name to keep.

Start-up recovery moves a damaged store aside by linking it to a second name and then
removing the first (a rename could replace a file): :func:`interrupted_move` finds a
recovery that was killed between the two, so that it can be finished.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

from .._errors import StoreError, StoreHasOtherNames


def _names_beside(real: str, info: os.stat_result) -> tuple[list[str], str | None]:
    """The other names of the file in its own folder, and why the folder could not be
    listed (None: it was)."""
    others = []
    try:
        with os.scandir(os.path.dirname(real)) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # gone meanwhile
                    found = entry.stat(follow_symlinks=False)  # a symbolic link is no name
                    same_file = (found.st_dev, found.st_ino) == (info.st_dev, info.st_ino)
                    if same_file and entry.path != real:
                        others.append(entry.path)
    except OSError as exc:
        return others, exc.strerror or str(exc)
    return sorted(others), None


def _log_size(name: str) -> int:
    """Bytes in the write-ahead log beside ``name`` (0: none; an empty one holds nothing)."""
    try:
        return os.path.getsize(name + "-wal")
    except OSError:
        return 0


def _in_use(name: str) -> bool:
    """Whether a process holds the trio_sync lock beside ``name`` (this one included)."""
    try:
        fd = os.open(name + ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return False


def refuse_other_names(path: str) -> None:
    """Refuses a store file that has more than one name (a hard link): ``path``, the
    name the store is being opened by.

    Raises:
        StoreHasOtherNames: The file has other names; the message lists those found in
            its folder, says which name holds a write-ahead log or is in use, and which
            name to keep.
        StoreError: ``path`` is not a file at all (a directory, say: its link count
            counts its entries, not other names).
        OSError: ``path`` cannot be examined.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise StoreError(f"store {path!r} is {what}: give the path of a store file")
    if info.st_nlink <= 1:
        return
    real = os.path.realpath(path)
    others, unlisted = _names_beside(real, info)
    info = os.stat(path)  # again: a name removed meanwhile is not held against it
    if info.st_nlink <= 1:
        return
    names = [real, *others]
    logged = [name for name in names if _log_size(name) > 0]
    busy = [name for name in others if _in_use(name)]
    listed = ", ".join(repr(name) for name in others) or "none"
    where = f"other names beside it: {listed}"
    elsewhere = info.st_nlink - 1 - len(others)
    if unlisted is not None:
        where += f" (its folder could not be listed: {unlisted})"
    if elsewhere > 0:
        where += (
            f"; {elsewhere} other name(s) in other folders (find them with "
            f"`find / -xdev -samefile {real!r}`)"
        )
    if busy:
        advice = (
            f"it is in use by the name {busy[0]!r}: keep that name and remove every other "
            "(the one you opened included)"
        )
    elif len(logged) == 1:
        keep = logged[0]
        advice = (
            f"{keep!r} has a write-ahead log holding commits the other names do not see: "
            f"keep {keep!r} and remove every other name"
            + (" (the one you opened included)" if keep != real else "")
        )
    elif logged:
        advice = (
            "several names have a write-ahead log: remove nothing yet; copy every one of "
            "these files with its -wal aside first, and ask for help"
        )
    else:
        advice = "no name has a write-ahead log: keep any one name and remove the others"
    raise StoreHasOtherNames(
        f"store {path!r} has {info.st_nlink} names (hard links; {where}). SQLite keeps a "
        "store's write-ahead log, and trio_sync its lock, beside the name it is opened "
        f"by, so under two names commits can be lost. What to do: {advice}. To back up a "
        "store, copy it while it is closed; do not link it",
        others=tuple(others),
    )


def interrupted_move(path: str) -> str | None:
    """The name a start-up recovery gave a damaged store before it was killed, when the
    file at ``path`` has exactly one other name, ``path`` + ``.corrupt.`` + a stamp,
    beside it (the recovery links that name, then removes ``path``). None otherwise."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if info.st_nlink != 2:
        return None
    real = os.path.realpath(path)
    others, _ = _names_beside(real, info)
    if len(others) == 1 and os.path.basename(others[0]).startswith(
        os.path.basename(real) + ".corrupt."
    ):
        return others[0]
    return None
