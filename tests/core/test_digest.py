"""hash_file: the digests hashlib gives, in one pass, through a path or an open descriptor."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imagefactory.digest import CHUNK, hash_file


def _data(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7, 3 * CHUNK])
@pytest.mark.parametrize("algorithms", [("sha256",), ("sha256", "sha512")], ids=["one", "two"])
def test_digests_equal_hashlib_at_chunk_boundaries(
    tmp_path: Path, size: int, algorithms: tuple[str, ...]
) -> None:
    """Both paths (one hash; sha512 on the helper thread over alternating buffers)."""
    data = _data(size)
    path = tmp_path / "disk"
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    result = hash_file(path, algorithms, lambda done, total: seen.append((done, total)))
    assert result.hexdigests == {a: hashlib.new(a, data).hexdigest() for a in algorithms}
    assert result.size == size
    assert [done for done, _ in seen] == sorted(
        {min(size, n) for n in range(CHUNK, size + CHUNK, CHUNK)}
    )
    assert all(total == size for _, total in seen)


def test_through_a_descriptor_its_offset_is_left_alone(tmp_path: Path) -> None:
    data = _data(CHUNK + 3)
    path = tmp_path / "disk"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        result = hash_file("named-only", ("sha256",), fd=fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)
    assert result.hexdigests["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_symlink_or_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "disk").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        hash_file(tmp_path / "link")
    with pytest.raises(OSError, match=r"not a regular file|Is a directory"):
        hash_file(tmp_path)


def test_no_algorithm_is_a_caller_bug(tmp_path: Path) -> None:
    (tmp_path / "disk").write_bytes(b"x")
    with pytest.raises(ValueError, match="no digest algorithm"):
        hash_file(tmp_path / "disk", ())
