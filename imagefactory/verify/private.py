"""A private copy of a user's upload: what verify and inspect read cannot change under them.

A descriptor binds a check to one file, but not against its owner: a user
who can write the uploaded disk can rewrite it in place between the digest
and the inspection (or swap a file of a directory they own). So an image
directory that anyone but us could change -- a file or the directory owned
by another user, or writable by group or others -- is first copied into a
fresh 0700 directory of ours (each file from the one descriptor its type and
size were checked on: a copy-on-write clone where the file system offers
one, an in-kernel sparse copy otherwise), and verify and inspect work on
that copy only. Links are copied as links (and then refused by verify),
never followed.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagefactory.errors import InputError
from imagefactory.fsutil import clone_or_copy_fd


class PrivateCopyError(InputError):
    """The upload cannot be copied (too large, unreadable, not a directory)."""


def _changeable(st: os.stat_result) -> bool:
    return st.st_uid != os.geteuid() or bool(st.st_mode & 0o022)


def needs_private_copy(path: Path) -> bool:
    """Whether anyone but us could change the directory ``path`` or a file in it."""
    try:
        if _changeable(os.lstat(path)):
            return True
        with os.scandir(path) as entries:
            return any(_changeable(entry.stat(follow_symlinks=False)) for entry in entries)
    except OSError:
        return True  # cannot tell: copy (the copy then reports what is wrong)


_OPEN_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_COPY = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_file(src: Path, dst: Path, max_bytes: int) -> None:
    """Copy one file of the upload into ``dst``, from the descriptor that was checked.

    Opened once, never through a symlink (a link is copied as a link, and
    verify refuses it naming it); its type and size are read from that
    descriptor, and the bytes come from it: a reflink where the file system can,
    else an in-kernel sparse copy (:func:`imagefactory.fsutil.clone_or_copy_fd`).
    A FIFO or device is not copied (verify reports the file missing), and never
    opened for I/O: ``O_NONBLOCK`` keeps a FIFO from hanging the open.
    """
    try:
        fd = os.open(src, _OPEN_SOURCE)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        os.symlink(os.readlink(src), dst)  # verify refuses it, naming it
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return  # FIFOs, devices: not copied (verify reports the file missing)
        if st.st_size > max_bytes:
            raise PrivateCopyError(f"{src}: {st.st_size} bytes, over the copy limit {max_bytes}")
        out = os.open(dst, _CREATE_COPY, 0o600)
        try:
            clone_or_copy_fd(fd, out)
            copied = os.fstat(out).st_size
        finally:
            os.close(out)
        if copied > max_bytes:  # grown by its owner since the check
            raise PrivateCopyError(f"{src}: {copied} bytes, over the copy limit {max_bytes}")
    finally:
        os.close(fd)


@contextmanager
def private_copy(path: Path, max_bytes: int) -> Iterator[Path]:
    """A copy of the image directory ``path`` in a fresh private directory, removed after."""
    if not path.is_dir():
        raise PrivateCopyError(f"{path}: not an image directory")
    work = Path(tempfile.mkdtemp(prefix="imagefactory-private-"))
    try:
        copy = work / path.name
        copy.mkdir(mode=0o700)
        try:
            with os.scandir(path) as entries:
                names = sorted(entry.name for entry in entries)
            for name in names:
                _copy_file(path / name, copy / name, max_bytes)
        except OSError as exc:
            raise PrivateCopyError(f"{path}: cannot copy: {exc}") from exc
        yield copy
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def stable_view(path: Path, max_bytes: int) -> Iterator[Path]:
    """``path`` itself when only we can change it, else a :func:`private_copy` of it."""
    if needs_private_copy(path):
        with private_copy(path, max_bytes) as copy:
            yield copy
    else:
        yield path


@contextmanager
def stable_disk(path: Path, max_bytes: int) -> Iterator[Path]:
    """The disk file ``path`` itself when only we can change it, else a private copy."""
    try:
        changeable = _changeable(os.lstat(path)) or _changeable(os.stat(path.parent))
    except OSError as exc:
        raise PrivateCopyError(f"{path}: cannot stat: {exc.strerror}") from exc
    if not changeable:
        yield path
        return
    work = Path(tempfile.mkdtemp(prefix="imagefactory-private-"))
    try:
        copy = work / path.name
        try:
            _copy_file(path, copy, max_bytes)
        except OSError as exc:
            raise PrivateCopyError(f"{path}: cannot copy: {exc}") from exc
        yield copy
    finally:
        shutil.rmtree(work, ignore_errors=True)
