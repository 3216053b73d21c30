"""A private copy of a user's upload: what verify and inspect read cannot change under them.

A descriptor binds a check to one file, but not against its owner: a user
who can write the uploaded disk can rewrite it in place between the digest
and the inspection (or swap a file of a directory they own). So an image
directory that anyone but us could change -- a file or the directory owned
by another user, or writable by group or others -- is first copied into a
fresh 0700 directory of ours (the disk with ``cp --reflink=auto``: a
copy-on-write clone where the file system offers one, sparse otherwise), and
verify and inspect work on that copy only. Links are copied as links (and then
refused by verify), never followed.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imagefactory.errors import InputError
from imagefactory.fsutil import read_bounded
from imagefactory.run import run

#: Largest metadata file copied (labels, SBOM, attestations).
MAX_METADATA_COPY = 64 * 1024 * 1024


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


def _copy_file(src: Path, dst: Path, max_bytes: int) -> None:
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)  # verify refuses it, naming it
        return
    if not stat.S_ISREG(st.st_mode):
        return  # FIFOs, devices: not copied (verify reports the file missing)
    if st.st_size > max_bytes:
        raise PrivateCopyError(f"{src}: {st.st_size} bytes, over the copy limit {max_bytes}")
    if st.st_size > MAX_METADATA_COPY:
        run(["cp", "--reflink=auto", "--sparse=always", "-P", "--", str(src), str(dst)])
    else:
        dst.write_bytes(read_bounded(src, MAX_METADATA_COPY))


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
