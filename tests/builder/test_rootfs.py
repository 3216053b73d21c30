"""DIB's root file system image, mounted as the tree (real mkfs.ext4 and a real loop mount)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from imagefactory.builder import rootfs
from imagefactory.errors import BuildError
from imagefactory.guest.tree import HostTree

pytestmark = pytest.mark.integration


def _image(tmp_path: Path) -> Path:
    """An ext4 image as DIB's ``-t raw`` makes one: a tree, no partition table."""
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho ran > /tmp/ran\n")
    (src / "usr/bin/tool").chmod(0o4755)
    (src / "etc").mkdir()
    (src / "etc/data").write_bytes(b"x" * 1000)
    (src / "etc/link").symlink_to("/etc/passwd")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    image = tmp_path / "rootfs.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(image), "16M"], check=True)
    return image


def _mount_options(tree: Path) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(tree):
            return set(fields[5].split(","))
    raise AssertionError(f"{tree} is not mounted")


def test_the_image_is_mounted_data_only_and_released(tmp_path: Path) -> None:
    image = _image(tmp_path)
    tree = tmp_path / "tree"
    rootfs.mount_image(image, tree)
    try:
        assert {"nodev", "nosuid", "noexec"} <= _mount_options(tree)
        # The modes are kept as data (mkfs -d copies them); none of them acts.
        assert (tree / "usr/bin/tool").stat().st_mode & 0o4000
        with pytest.raises(PermissionError):
            subprocess.run([str(tree / "usr/bin/tool")], check=False)
        with pytest.raises(PermissionError):
            (tree / "null").open("rb")
        with HostTree(tree) as t:
            t.write("/etc/fstab", b"UUID=x / ext4 defaults 0 1\n", 0o644)
            assert t.read("/etc/link") is None  # a symlink is never followed out
        assert (tree / "etc/fstab").read_bytes().startswith(b"UUID=x")
    finally:
        rootfs.release_tree(tree)
    assert not tree.exists()
    assert not any(p.endswith(str(image)) for p in _loop_backings())


def _loop_backings() -> list[str]:
    out = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.strip() for line in out.splitlines()]


def test_content_bytes_is_the_size_of_a_tar_of_the_tree(tmp_path: Path) -> None:
    image = _image(tmp_path)
    tree = tmp_path / "tree"
    rootfs.mount_image(image, tree)
    try:
        tar = tmp_path / "tree.tar"
        subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
        estimate = rootfs.content_bytes(tree)
        # tar pads its archive to whole 10 KiB records; the estimate is within one.
        assert estimate <= tar.stat().st_size < estimate + 10240
    finally:
        rootfs.release_tree(tree)


def test_a_missing_image_is_a_build_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"rootfs\.raw"):
        rootfs.mount_image(tmp_path / "rootfs.raw", tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_release_of_an_unmounted_tree_removes_it(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/c").write_text("c")
    rootfs.release_tree(tree)
    assert not tree.exists()


def test_dibs_output_directory_is_a_private_tmpfs_when_asked(tmp_path: Path) -> None:
    out = rootfs.output_dir(tmp_path, 64 << 20, in_memory=True)
    assert out == tmp_path / rootfs.OUTPUT_DIR
    assert {"nodev", "nosuid", "noexec"} <= _mount_options(out)
    assert os.statvfs(out).f_blocks * os.statvfs(out).f_frsize == 64 << 20
    rootfs.release_tree(out)
    assert not out.exists()
    plain = rootfs.output_dir(tmp_path, 64 << 20, in_memory=False)
    assert not os.path.ismount(plain)
    rootfs.release_tree(plain)
    assert not plain.exists()
