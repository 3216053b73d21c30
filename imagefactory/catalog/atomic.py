"""Crash-safe file writes for the catalog and the store: temp file, fsync, rename.

A reader (a web server, a pull, the gate) sees a file either as it was or as
it is now, never half written, even when the writer is killed with SIGKILL or
the disk fills up; leftovers are temp files named ``.*.tmp`` that the next
writer (holding the lock) removes.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that it appears complete or not at all.

    The temp file goes into ``tmp_dir`` (same file system) when given, so a
    writer that keeps all its temp files in one place cleans up by listing it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    where = tmp_dir if tmp_dir is not None else path.parent
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def is_disk_full(exc: OSError) -> bool:
    """Whether ``exc`` means the file system (or the file size limit) is exhausted."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
