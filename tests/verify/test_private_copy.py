"""verify and inspect of a user's upload work on a private copy (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagefactory.verify.private import (
    PrivateCopyError,
    needs_private_copy,
    stable_disk,
    stable_view,
)
from tests.fakes.imagedirs import make_image

RAW = "atlas-wn-debian12-1.0.raw"


def test_root_owned_private_image_is_read_in_place(tmp_path: Path) -> None:
    image = make_image(tmp_path, "mine")
    for path in (image, *image.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert not needs_private_copy(image)
    with stable_view(image, 1 << 30) as view:
        assert view == image


def test_users_upload_is_copied_and_later_writes_do_not_reach_the_copy(tmp_path: Path) -> None:
    image = make_image(tmp_path, "upload")
    os.chown(image / RAW, 1000, 1000)  # the user still owns (and can rewrite) the disk
    original = (image / RAW).read_bytes()
    with stable_view(image, 1 << 30) as view:
        assert view != image
        assert (view / RAW).read_bytes() == original
        (image / RAW).write_bytes(b"E" * len(original))  # the owner rewrites in place
        assert (view / RAW).read_bytes() == original
        assert (view.stat().st_mode & 0o777) == 0o700
    assert not view.exists()


def test_symlinked_file_in_an_upload_stays_a_link(tmp_path: Path) -> None:
    image = make_image(tmp_path, "upload")
    (image / RAW).unlink()
    (image / RAW).symlink_to("/etc/shadow")
    os.chown(image, 1000, 1000, follow_symlinks=False)
    with stable_view(image, 1 << 30) as view:
        assert (view / RAW).is_symlink()


def test_users_disk_for_inspect_is_copied(tmp_path: Path) -> None:
    disk = tmp_path / "up.raw"
    disk.write_bytes(b"\1" * 4096)
    disk.chmod(0o666)
    with stable_disk(disk, 1 << 30) as copy:
        assert copy != disk
        disk.write_bytes(b"\2" * 4096)
        assert copy.read_bytes() == b"\1" * 4096


def test_a_users_sparse_disk_is_copied_sparse_from_its_descriptor(tmp_path: Path) -> None:
    """In-kernel copy from the checked descriptor (no ``cp``): holes stay holes, the copy
    is a file of its own."""
    disk = tmp_path / "up.raw"
    with disk.open("wb") as f:
        f.write(b"boot")
        f.seek(256 << 20)
        f.write(b"end")
    disk.chmod(0o666)
    with stable_disk(disk, 1 << 30) as copy:
        assert copy.read_bytes()[:4] == b"boot"
        assert copy.stat().st_size == disk.stat().st_size
        assert copy.stat().st_blocks * 512 < 16 << 20  # not 256 MiB of zeros
        assert copy.stat().st_ino != disk.stat().st_ino


def test_a_fifo_in_an_upload_is_not_opened_for_io_and_not_copied(tmp_path: Path) -> None:
    image = make_image(tmp_path, "upload")
    (image / RAW).unlink()
    os.mkfifo(image / RAW)  # a blocking open would hang here forever
    os.chown(image, 1000, 1000)
    with stable_view(image, 1 << 30) as view:
        assert not (view / RAW).exists()
        assert (view / "labels.json").is_file()


def test_an_upload_over_the_copy_limit_is_refused_by_its_size(tmp_path: Path) -> None:
    disk = tmp_path / "up.raw"
    disk.write_bytes(b"\1" * 8192)
    disk.chmod(0o666)
    with (
        pytest.raises(PrivateCopyError, match="8192 bytes, over the copy limit 4096"),
        stable_disk(disk, 4096),
    ):
        pass
