"""The example built on its site base's OS-tree layer holds what a full build holds.

The session's example build is a full one (``example_build``, no layer). Here
the example is built again on its layer, which this build makes first (a
diskimage-builder run of the site base's packages), and the two finished
disks are compared file by file: every path with its type, mode, owner,
size, the sha256 of a regular file's bytes and a symlink's target, read off
the ext4 file system of each disk with ``debugfs`` (no mount, no appliance).
The initramfs, whose cpio carries build times, is compared by the same
listing of its unpacked contents. The packages (versions included) and the
audit (every check, its status and evidence) must be the same.

Per-build by nature, and so left out of the comparison, each with its reason
(:data:`PER_BUILD`): the initramfs image (its contents are compared), DIB's
record of its own argv and environment, ldconfig's inode cache. The files
naming the root file system's UUID, which each build chooses, are compared
with it replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder.pipeline import BuildResult
from imagefactory.run import run
from tests.integration_images import EXAMPLE, Builder

pytestmark = pytest.mark.integration

#: Paths whose content differs between any two builds of the same inputs, each
#: with why; a pattern must match the whole path.
PER_BUILD: dict[str, str] = {
    # The initramfs is a cpio archive that records each file's time of
    # generation; its unpacked contents are compared instead (see below).
    r"/boot/initrd\.img-[^/]+": "a cpio archive carrying the build's times",
    # diskimage-builder's record of its own run: its arguments name the
    # build's staging directory (and the layer's attrs element), its
    # environment the image cache it was given.
    r"/etc/dib-manifests/dib_(arguments|environment)": "DIB's argv and environment",
    # ldconfig's auxiliary cache keys each library by inode, size and times.
    r"/var/cache/ldconfig/aux-cache": "ldconfig's cache of library inodes and times",
}
#: Files naming the root file system's UUID, chosen by each build: compared with
#: the build's UUID (build.json disk.root_uuid) replaced by a placeholder.
UUID_FILES = ("/etc/fstab", "/boot/grub/grub.cfg")


def _per_build(path: str) -> str | None:
    for pattern, why in PER_BUILD.items():
        if re.fullmatch(pattern, path):
            return why
    return None


def _listing(root: Path, uuid: str = "") -> dict[str, tuple[Any, ...]]:
    """Every path under ``root``: type, mode, owner, size, sha256 or link target.

    In :data:`UUID_FILES`, ``uuid`` (the build's root file system UUID) is
    replaced by a placeholder before hashing.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = "/" + str(path.relative_to(root))
            what: Any = None
            size: int | None = st.st_size
            if stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
                if rel in UUID_FILES and uuid:
                    assert uuid.encode() in data, f"{rel} does not name the root UUID {uuid}"
                    data = data.replace(uuid.encode(), b"ROOT-UUID")
                    size = len(data)
                what = hashlib.sha256(data).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                size = None
            kind, mode = stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)
            out[rel] = (kind, mode, st.st_uid, st.st_gid, size, what)
    return out


#: Paths whose extended attributes are compared too: a tree's ACLs (systemd's on
#: the journal), which DIB's extraction of the layer drops and its hook sets again.
ATTR_PATHS = ("/var/log/journal",)


def _dump_disk(result: BuildResult, work: Path) -> tuple[Path, dict[str, str]]:
    """The disk's root file system as a directory (debugfs rdump: no mount), and the
    extended attributes of :data:`ATTR_PATHS` as debugfs lists them."""
    (disk,) = (result.directory / name for name in result.record["disk"]["files"])
    raw = work / "disk.raw"
    run(["qemu-img", "convert", "-O", "raw", disk, raw])
    table = json.loads(run(["sfdisk", "-J", raw], capture=True).stdout)
    start = table["partitiontable"]["partitions"][0]["start"] * 512
    fs = f"{raw}?offset={start}"
    tree = work / "tree"
    tree.mkdir()
    run(["debugfs", "-R", f"rdump / {tree}", fs])
    attrs = {
        path: run(["debugfs", "-R", f"ea_list {path}", fs], capture=True).stdout
        for path in ATTR_PATHS
    }
    raw.unlink()
    return tree, attrs


def _initramfs(tree: Path, work: Path) -> dict[str, tuple[Any, ...]]:
    (initrd,) = sorted((tree / "boot").glob("initrd.img-*"))
    out = work / "initramfs"
    run(["unmkinitramfs", initrd, out])
    return _listing(out)


def _differences(
    full: dict[str, tuple[Any, ...]], layered: dict[str, tuple[Any, ...]]
) -> list[str]:
    return sorted(p for p in full.keys() | layered.keys() if full.get(p) != layered.get(p))


def _audit(result: BuildResult) -> list[tuple[Any, ...]]:
    report = json.loads((result.directory / "audit.json").read_text())
    return [
        (c["id"], c["status"], c["required"], json.dumps(c["evidence"], sort_keys=True))
        for c in report["checks"]
    ]


def test_the_layered_example_is_the_full_build(
    example_build: BuildResult, build_recipe: Builder, tmp_path: Path
) -> None:
    assert example_build.record["layer"]["used"] is False
    output = tmp_path / "layered"
    output.mkdir()
    layered = build_recipe(EXAMPLE, output, boot_test=False, use_cache=False, use_layer=True)
    layer = layered.record["layer"]
    assert layer["used"] is True
    assert layer["hit"] is False  # built by this build, from the site base's packages
    assert "nfs-common" not in layer["packages"]  # the example's own: its delta
    timings = layered.record["timings"]
    print(f"layered build: layer step {timings['layer']:.1f}s, dib {timings['dib']:.1f}s,")
    print(f"  total {timings['total']:.1f}s; the full build: {example_build.record['timings']}")

    assert layered.record["packages"] == example_build.record["packages"]
    assert _audit(layered) == _audit(example_build)
    assert layered.record["audit"] == example_build.record["audit"]

    work = tmp_path / "compare"
    (work / "full").mkdir(parents=True)
    (work / "layered").mkdir()
    try:
        full_tree, full_attrs = _dump_disk(example_build, work / "full")
        layered_tree, layered_attrs = _dump_disk(layered, work / "layered")
        assert "posix_acl_default" in full_attrs["/var/log/journal"]
        assert layered_attrs == full_attrs
        full = _listing(full_tree, example_build.record["disk"]["root_uuid"])
        ours = _listing(layered_tree, layered.record["disk"]["root_uuid"])
        assert len(full) > 10000  # a whole OS tree was read
        differ = _differences(full, ours)
        unexplained = [p for p in differ if _per_build(p) is None]
        assert unexplained == [], [(p, full.get(p), ours.get(p)) for p in unexplained]
        differ_inside = _differences(
            _initramfs(full_tree, work / "full"), _initramfs(layered_tree, work / "layered")
        )
        assert differ_inside == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
