"""Removing a work tree never deletes through a mount left inside it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagefactory.builder import cleanup
from imagefactory.builder.cleanup import mounts_below, remove_tree
from tests.conftest import require_or_skip

MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
90 22 0:5 / /out/.staging-wn-1-9/dib-tmp/dib_build.x/mnt/dev rw - devtmpfs udev rw
91 90 0:6 / /out/.staging-wn-1-9/dib-tmp/dib_build.x/mnt/dev/pts rw - devpts devpts rw
92 22 0:7 / /out/.staging-wn-1-9/with\\040space rw - tmpfs tmpfs rw
93 22 0:8 / /out/.staging-wn-1-90 rw - tmpfs tmpfs rw
"""


def test_mounts_below_deepest_first_unescaped_and_not_siblings() -> None:
    found = mounts_below(Path("/out/.staging-wn-1-9"), MOUNTINFO)
    assert found == [
        Path("/out/.staging-wn-1-9/dib-tmp/dib_build.x/mnt/dev/pts"),
        Path("/out/.staging-wn-1-9/dib-tmp/dib_build.x/mnt/dev"),
        Path("/out/.staging-wn-1-9/with space"),
    ]


def test_no_mounts_below_a_plain_tree() -> None:
    assert mounts_below(Path("/out/elsewhere"), MOUNTINFO) == []


@pytest.mark.integration
def test_remove_tree_unmounts_a_bind_mount_and_keeps_its_source(tmp_path: Path) -> None:
    require_or_skip(os.geteuid() == 0, "mounting needs root")
    precious = tmp_path / "host-dir"
    precious.mkdir()
    (precious / "keep-me").write_text("host data")
    tree = tmp_path / "staging"
    target = tree / "chroot" / "mnt"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(precious), str(target)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "chroot")], check=False)
    try:
        remove_tree(tree)
    finally:
        for point in mounts_below(tree):
            subprocess.run(["umount", "--lazy", str(point)], check=False)
    assert not tree.exists()
    assert (precious / "keep-me").read_text() == "host data"
    assert mounts_below(tmp_path) == []


def test_a_directory_of_files_goes_without_a_process_and_its_symlinks_are_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached rebuild's staging directory: unlinks, no ``rm``; a nested tree still uses ``rm``."""
    started: list[list[str]] = []
    monkeypatch.setattr(cleanup, "run", lambda argv, **_: started.append(argv))
    outside = tmp_path / "outside"
    outside.write_text("host data")
    flat = tmp_path / "staging"
    flat.mkdir()
    (flat / "build.json").write_text("{}")
    (flat / "link").symlink_to(outside)
    (flat / "dangling").symlink_to(tmp_path / "nowhere")
    remove_tree(flat)
    assert not flat.exists()
    assert started == []
    assert outside.read_text() == "host data"
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    remove_tree(nested)
    assert started == [["rm", "-rf", "--one-file-system", "--", str(nested)]]
