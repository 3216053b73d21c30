from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import imagefactory.digest
from imagefactory.builder.cache import (
    ENTRY_FILE,
    BuildCache,
    CacheEntryChanged,
    cache_key,
    file_digest,
)


def _disk(tmp_path: Path, content: bytes = b"disk bytes") -> Path:
    path = tmp_path / "wn-1.qcow2"
    path.write_bytes(content)
    return path


def test_key_is_canonical_and_input_sensitive() -> None:
    inputs = {"recipe": {"a": 1, "b": [1, 2]}, "tools": {"dib": "3.43.0"}}
    reordered = {"tools": {"dib": "3.43.0"}, "recipe": {"b": [1, 2], "a": 1}}
    assert cache_key(inputs) == cache_key(reordered)
    assert cache_key(inputs) != cache_key({**inputs, "tools": {"dib": "3.44.0"}})
    assert cache_key(inputs) != cache_key({**inputs, "recipe": {"a": 1, "b": [2, 1]}})


def test_store_then_lookup_returns_verified_entry(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {"created": "now"})
    entry = cache.lookup("k1")
    assert entry is not None
    assert entry.record == {"created": "now"}
    out = tmp_path / "out"
    out.mkdir()
    files = entry.materialize(out)
    assert files[disk.name].read_bytes() == b"disk bytes"
    assert cache.lookup("other") is None


def test_entry_whose_file_changed_is_evicted_not_served(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    stored = tmp_path / "cache" / "builds" / "k1" / disk.name
    # Same size, different bytes: only the digest can tell.
    os.chmod(stored, 0o644)
    stored.write_bytes(b"DISK BYTES")
    assert cache.lookup("k1") is None
    assert not (tmp_path / "cache" / "builds" / "k1").exists()


def test_entry_with_foreign_format_is_ignored(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "builds" / "k1"
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text(json.dumps({"schema": "other", "key": "k1"}))
    assert BuildCache(tmp_path / "cache").lookup("k1") is None


def test_half_written_entries_are_invisible(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    # A digest that does not match the stored copy: nothing is stored, and a
    # temporary directory never has the final name.
    cache.store("k1", {disk.name: disk}, {disk.name: "sha256:0"}, {})
    assert os.listdir(tmp_path / "cache" / "builds") == []
    assert cache.lookup("k1") is None


def test_cache_and_outputs_share_no_inode_and_are_read_only(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = tmp_path / "wn-1.raw"
    with disk.open("wb") as stream:  # a sparse raw disk: 64 MiB, 4 KiB written
        stream.truncate(64 * 1024 * 1024)
        stream.write(b"x" * 4096)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    stored = tmp_path / "cache" / "builds" / "k1" / disk.name
    entry = cache.lookup("k1")
    assert entry is not None
    out = tmp_path / "out"
    out.mkdir()
    published = entry.materialize(out)[disk.name]
    inodes = {p.stat().st_ino for p in (disk, stored, published)}
    assert len(inodes) == 3
    for path in (stored, published):
        assert path.stat().st_mode & 0o777 == 0o444
        assert path.stat().st_nlink == 1
        # Copied sparse: far fewer blocks than the 64 MiB the file says.
        assert path.stat().st_blocks * 512 < 8 * 1024 * 1024
    assert file_digest(published) == file_digest(disk)


def _hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the build cache hashes, by the name it gives."""
    seen: list[str] = []
    real = imagefactory.digest.hash_file

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr("imagefactory.builder.cache.hash_file", spy)
    return seen


def _stored(tmp_path: Path, name: str) -> Path:
    return tmp_path / "cache" / "builds" / "k1" / name


def test_an_unchanged_entry_is_served_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyed on the identity the verified cache uses: a hit reads no disk byte."""
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    hashed = _hashes(monkeypatch)
    entry = cache.lookup("k1")
    assert entry is not None
    out = tmp_path / "out"
    out.mkdir()
    assert entry.materialize(out)[disk.name].read_bytes() == b"disk bytes"
    assert hashed == []


def test_an_edit_with_size_and_mtime_put_back_is_caught(tmp_path: Path) -> None:
    """Same size, mtime restored: ctime, which no user can set back, still tells."""
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    stored = _stored(tmp_path, disk.name)
    before = stored.stat()
    os.chmod(stored, 0o644)
    stored.write_bytes(b"DISK BYTES")
    os.chmod(stored, 0o444)
    os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cache.lookup("k1") is None
    assert not stored.parent.exists()


def test_a_new_identity_with_the_same_bytes_is_rehashed_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old entry (no identity recorded) or a restored cache: hashed, kept, recorded."""
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    meta_file = _stored(tmp_path, ENTRY_FILE)
    meta = json.loads(meta_file.read_text())
    del meta["files"][disk.name]["identity"]
    meta_file.write_text(json.dumps(meta))
    hashed = _hashes(monkeypatch)
    assert cache.lookup("k1") is not None
    assert len(hashed) == 1
    assert "identity" in json.loads(meta_file.read_text())["files"][disk.name]
    assert cache.lookup("k1") is not None
    assert len(hashed) == 1  # the second hit reads nothing


def test_a_file_changed_after_the_lookup_is_not_copied(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    entry = cache.lookup("k1")
    assert entry is not None
    stored = _stored(tmp_path, disk.name)
    os.chmod(stored, 0o644)
    stored.write_bytes(b"DISK BYTES")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CacheEntryChanged, match="changed since it was stored"):
        entry.materialize(out)
    assert not (out / disk.name).exists()


def test_a_symlink_in_the_entry_is_not_followed(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    disk = _disk(tmp_path)
    cache.store("k1", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
    stored = _stored(tmp_path, disk.name)
    stored.unlink()
    stored.symlink_to(disk)  # the same bytes, through a link
    assert cache.lookup("k1") is None
