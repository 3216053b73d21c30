"""Small file-system helpers every stage shares: atomic writes and sizes.

:func:`atomic_write` is the one way a file that others read (an attestation,
the verified cache, catalog metadata) is replaced: written to a temporary
name in the same directory, flushed, then renamed over the old one, so a
reader sees the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB
_UNITS = {"K": KIB, "M": MIB, "G": GIB, "T": TIB}
#: A size as recipes, trust policies and settings write it: ``512M``, ``2G``, ``1T``.
SIZE_PATTERN = r"^[1-9][0-9]{0,6}[KMGT]$"


def parse_size(text: str) -> int:
    """``"2G"`` -> bytes. Raises ``ValueError`` for anything but :data:`SIZE_PATTERN`."""
    if not re.fullmatch(SIZE_PATTERN, text):
        raise ValueError(f"expected a size like '2G' (K, M, G or T), found {text!r}")
    return int(text[:-1]) * _UNITS[text[-1]]


def atomic_write(
    path: Path,
    data: bytes | str,
    mode: int = 0o644,
    *,
    durable: bool = True,
    tmp_dir: Path | None = None,
) -> Path:
    """Replace ``path`` with ``data`` atomically; the file gets ``mode``.

    With ``durable`` the data and the rename are flushed to disk before this
    returns, so a crash right after leaves the new file, not an empty one.
    ``tmp_dir`` (on the same file system) holds the temporary file instead of
    ``path``'s directory: a writer that keeps every temporary file in one
    place (the catalog) cleans up after a crash by emptying that place.
    """
    payload = data.encode() if isinstance(data, str) else data
    directory = path.parent
    where = tmp_dir if tmp_dir is not None else directory
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(payload)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(directory)
    return path


def is_disk_full(exc: OSError) -> bool:
    """Whether ``exc`` means the file system (or the file size limit) is exhausted."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_identity(st: os.stat_result) -> list[int]:
    """What says a file is the one that was checked: ``(dev, inode, size, mtime_ns,
    ctime_ns, uid, gid, mode)`` of its ``stat``.

    Writing, truncating, replacing, renaming over, chmod or chown all change at
    least ``ctime``, which no user can set back (only the clock can). The
    verified cache (:mod:`imagefactory.verify.cache`) and the build cache key
    their "unchanged since it was hashed" on it.
    """
    return [
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_uid,
        st.st_gid,
        st.st_mode,
    ]


#: ``ioctl(dst, FICLONE, src)``: ``dst`` shares ``src``'s blocks copy-on-write (btrfs, XFS).
FICLONE = 0x40049409
#: Bytes per ``copy_file_range`` call: Ctrl-C is answered between two of them.
COPY_STEP = 64 * MIB
_NO_CLONE = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF)


def clone_or_copy_fd(src: int, dst: int) -> str:
    """Make the empty file open for writing at ``dst`` hold the bytes of ``src``.

    A reflink (``FICLONE``) where the file system can: instant, no space, and
    still a file of its own (a write to one never reaches the other). Else an
    in-kernel copy (``copy_file_range``) of the data only -- holes found with
    ``SEEK_DATA``/``SEEK_HOLE`` stay holes, so a sparse raw disk stays sparse.
    Returns ``"reflink"`` or ``"copy"``. Both descriptors are used as they
    are: nothing is opened by name, so what the caller checked is what is copied.
    """
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError as exc:
        if exc.errno not in _NO_CLONE:
            raise
    else:
        return "reflink"
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole after offset
                break
            raise
        hole = min(os.lseek(src, data, os.SEEK_HOLE), size)
        _copy_range(src, dst, data, hole - data)
        offset = hole
    os.ftruncate(dst, size)
    return "copy"


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        step = min(COPY_STEP, end - offset)
        try:
            n = os.copy_file_range(src, dst, step, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _copy_by_reading(src, dst, offset, step)
        if n == 0:
            raise OSError(errno.EIO, f"the source ended at byte {offset} while it was copied")
        offset += n


def _copy_by_reading(src: int, dst: int, offset: int, length: int) -> int:
    data = os.pread(src, length, offset)
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.pwrite(dst, view[written:], offset + written)
    return len(data)


#: Bytes written between two starts of writeback (:class:`Writeback`).
WRITEBACK_STEP = 32 * MIB
_SYNC_WAIT_BEFORE, _SYNC_WRITE, _SYNC_WAIT_AFTER = 1, 2, 4


class Writeback:
    """Have the kernel write a growing file's bytes out while more arrive.

    Call :meth:`wrote` with the file's written length as it grows: every
    :data:`WRITEBACK_STEP` bytes the new range's writeback is started
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``: returns at once) and the
    range before it waited for, so dirty pages stay bounded and the closing
    ``fsync`` has a step or two left to write instead of the whole file. Only
    a speed-up: the caller still fsyncs; where ``sync_file_range`` is missing
    (not Linux) it does nothing.

    With ``drop``, the range just waited for (clean now, on disk) is also
    dropped from the page cache (``POSIX_FADV_DONTNEED``): a file written once
    and not read back soon (a downloaded disk, whose digest was computed from
    the bytes as they were written) then streams through a window of two steps
    instead of filling the page cache, and its new pages come from its own
    freed ones rather than from reclaiming other processes' cache (measured:
    about a third less system time per GiB on a loaded host; see
    ``bench/pull.py``).
    """

    def __init__(self, fd: int, start: int = 0, *, drop: bool = False) -> None:
        self.fd = fd
        self.started = start  # writeback asked for up to here
        self.waited = start  # and waited for up to here
        self.drop = drop and hasattr(os, "posix_fadvise")

    def wrote(self, end: int) -> None:
        if end - self.started < WRITEBACK_STEP:
            return
        _sync_file_range(self.fd, self.started, end - self.started, _SYNC_WRITE)
        if self.started > self.waited:
            flags = _SYNC_WAIT_BEFORE | _SYNC_WRITE | _SYNC_WAIT_AFTER
            _sync_file_range(self.fd, self.waited, self.started - self.waited, flags)
            if self.drop:
                # Advice: an error only costs speed (the pages stay cached).
                with contextlib.suppress(OSError):
                    os.posix_fadvise(
                        self.fd, self.waited, self.started - self.waited, os.POSIX_FADV_DONTNEED
                    )
            self.waited = self.started
        self.started = end


_LIBC: list[Any] = []


def _sync_file_range(fd: int, offset: int, length: int, flags: int) -> None:
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True).sync_file_range)
        except (OSError, AttributeError):
            _LIBC.append(None)
    call = _LIBC[0]
    if call is not None:
        # Advice-like: an error here (EINVAL on some file systems) only costs speed.
        call(fd, ctypes.c_int64(offset), ctypes.c_int64(length), ctypes.c_uint(flags))


#: Largest key, trust root or trust config file read.
MAX_TRUST_FILE_BYTES = 16 * 1024 * 1024


def read_bounded(path: Path, limit: int = MAX_TRUST_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (symlinks followed).

    Raises :class:`OSError` for a FIFO, device or other non-regular file (opened
    without blocking, so a FIFO cannot hang us) or a larger file (``EFBIG``).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
