"""verify and inspect of a user's upload work on a private copy (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

from imagefactory.verify.private import needs_private_copy, stable_disk, stable_view
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
