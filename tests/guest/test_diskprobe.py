"""A file that is no disk is refused before libguestfs or qemu launch; a typo is "no such file"."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory import inspection
from imagefactory.diskprobe import NotADiskError, raw_signature, require_disk, require_file
from imagefactory.errors import FileAccessError
from imagefactory.profiles import load_profile


def _raw(path: Path, offset: int, magic: bytes) -> Path:
    with path.open("wb") as stream:
        stream.truncate(1024 * 1024)
        stream.seek(offset)
        stream.write(magic)
    return path


def test_signatures(tmp_path: Path) -> None:
    assert raw_signature(_raw(tmp_path / "mbr", 510, b"\x55\xaa")) == "partition table"
    assert raw_signature(_raw(tmp_path / "ext", 1080, b"\x53\xef")) == "ext file system"
    assert raw_signature(_raw(tmp_path / "zero", 0, b"")) is None
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 1000)
    assert raw_signature(text) is None
    with pytest.raises(NotADiskError, match="not a disk image"):
        require_disk(text, "raw")
    require_disk(text, "qcow2")  # a recognised header already said what it is


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="no such file"):
        require_file(tmp_path / "typo.qcow2")
    with pytest.raises(FileAccessError, match="a directory"):
        require_file(tmp_path)


def test_inspect_of_a_text_file_never_decides_an_accelerator(tmp_path: Path) -> None:
    text = tmp_path / "README"
    text.write_text("not a disk\n" * 100)

    def no_launch() -> str:
        raise AssertionError("inspect got as far as choosing the appliance's accelerator")

    profile = load_profile("worker-node-default")
    with pytest.raises(NotADiskError):
        inspection.inspect_image(text, profile, accel=no_launch)
    with pytest.raises(FileAccessError, match="no such file"):
        inspection.inspect_image(tmp_path / "typo", profile, accel=no_launch)
