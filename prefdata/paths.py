"""Output paths: what a writer may replace.

A writer replaces a regular file or creates a new one; it never replaces a FIFO, a
device, a socket or a directory that happens to sit at its output path (renaming a
temp file over `/dev/null`'s twin or over a named pipe another program reads would
silently break that program). Symlinks are followed to what they point at.

>>> check_writable_file(Path("/dev/null"), "--out")
Traceback (most recent call last):
...
prefdata.errors.PrefdataError: --out /dev/null exists and is a character device, not a regular file; choose another path, or remove it first if you mean to replace it
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import Iterator

from prefdata.errors import PrefdataError, WorkspaceLocked

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_writable_file(path: Path, what: str = "output") -> None:
    """Raise unless `path` is absent or a regular file (after following symlinks)."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise PrefdataError(f"{what} {path} cannot be inspected ({err.strerror})", "choose another path") from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise PrefdataError(f"{what} {path} exists and is {kind}, not a regular file",
                        "choose another path, or remove it first if you mean to replace it")


@contextlib.contextmanager
def exclusive_lock(folder: Path, busy: str, fix: str) -> Iterator[None]:
    """Hold `folder/.lock` (flock) for the block, or refuse at once with `busy; fix` (exit 3).
    The kernel drops the lock when the process dies, so a killed holder never blocks a rerun."""
    fd = os.open(Path(folder) / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceLocked(busy, fix) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
