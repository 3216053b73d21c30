"""fsutil.clone_or_copy_fd: a file of its own with the same bytes, holes kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from imagefactory.fsutil import MIB, clone_or_copy_fd


def _sparse(path: Path) -> bytes:
    """Data, a hole, data, a trailing hole: 20 MiB that hold 2 x 64 KiB."""
    with path.open("wb") as stream:
        stream.write(b"a" * 65536)
        stream.seek(10 * MIB)
        stream.write(b"b" * 65536)
        stream.truncate(20 * MIB)
    return path.read_bytes()


def _copy(src: Path, dst: Path) -> str:
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return clone_or_copy_fd(s, d)
    finally:
        os.close(s)
        os.close(d)


def test_same_bytes_holes_kept_inode_of_its_own(tmp_path: Path) -> None:
    data = _sparse(tmp_path / "src")
    how = _copy(tmp_path / "src", tmp_path / "dst")
    assert how in ("reflink", "copy")
    assert (tmp_path / "dst").read_bytes() == data
    st = os.stat(tmp_path / "dst")
    assert st.st_ino != os.stat(tmp_path / "src").st_ino
    assert st.st_blocks * 512 < 4 * MIB  # not 20 MiB of zeros written out


def test_without_copy_file_range_it_reads_and_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system (or kernel) with neither reflinks nor copy_file_range."""

    def no_clone(*args: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "no reflinks here")

    def no_range(*args: object) -> int:
        raise OSError(errno.EXDEV, "no copy_file_range here")

    monkeypatch.setattr("imagefactory.fsutil.fcntl.ioctl", no_clone)
    monkeypatch.setattr("imagefactory.fsutil.os.copy_file_range", no_range)
    data = _sparse(tmp_path / "src")
    assert _copy(tmp_path / "src", tmp_path / "dst") == "copy"
    assert (tmp_path / "dst").read_bytes() == data


def test_an_empty_file_copies_to_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"")
    _copy(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b""
