"""File plumbing shared by fnn.io and fnn.data: a write that never leaves half a file."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["write_atomic"]


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through ``write(f)`` so that ``path`` holds at every moment either its old
    content or the new complete one, even with several writers at once: a temporary file of
    a unique name in the same directory, flushed to disk, then renamed over ``path``. An
    existing file's permission bits are kept (a new file gets the usual 0o666 less the umask);
    the temporary file is removed on any failure. A ``path`` that is a directory, or whose
    directory does not exist, raises at once naming ``path`` (not the temporary file, and not
    after the whole file has been written)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "cannot write a file over a directory", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no directory {str(path.parent)!r} to write "
                                "the file in", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _mode_for(path: Path) -> int:
    """The permission bits for the new ``path``: those of the file it replaces, else those a
    plain ``open`` would give (0o666 less the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only be
    read by setting it, which would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return _UMASK_AT_IMPORT


_UMASK_AT_IMPORT = os.umask(0o022)
os.umask(_UMASK_AT_IMPORT)
