"""``disk.compress``: the assembled qcow2 has compressed (zlib) clusters and the same disk.

Real sfdisk, mkfs.ext4 and qemu-img on a small tree (a second or two); the
build's integration test (tests/integration/test_every_recipe.py, the i386
recipe) boots, audits, signs and verifies a compressed disk.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from imagefactory.builder import assemble
from imagefactory.diskformat import check_safe
from imagefactory.vocab import DiskFormat
from tests.builder.trees import bios_tree
from tests.fakes import diskimages as fx

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.ext4", "qemu-img")),
    reason="needs sfdisk, mkfs.ext4 and qemu-img",
)


def _prepared(root: Path) -> assemble.PreparedTree:
    # Compressible content, several MiB of it, so the qcow2 has data clusters.
    return bios_tree(root, b"worker node " * (400 * 1024))


def _disk(tmp_path: Path, *, compress: bool) -> assemble.AssembledDisk:
    work = tmp_path / ("compressed" if compress else "plain")
    work.mkdir()
    return assemble.make_disk(
        _prepared(work),
        work,
        formats=(DiskFormat.QCOW2, DiskFormat.RAW),
        basename="wn-1.0",
        compress=compress,
    )


def _compressed_clusters(path: Path) -> tuple[int, int]:
    entries = fx.qcow2_l2_entries(path)
    return sum(1 for _at, e in entries if e & 1 << 62), len(entries)


def test_convert_argv_compresses_only_a_qcow2_and_names_zlib() -> None:
    raw, target = Path("d.raw"), Path("d.qcow2")
    assert assemble.convert_argv(raw, target, DiskFormat.QCOW2, compress=True) == [
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        "-o",
        "compression_type=zlib",
        "d.raw",
        "d.qcow2",
    ]
    plain = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "d.raw", "d.qcow2"]
    assert assemble.convert_argv(raw, target, DiskFormat.QCOW2, compress=False) == plain


def test_compressed_disk_is_the_same_disk_in_fewer_bytes(tmp_path: Path) -> None:
    plain = _disk(tmp_path, compress=False).images[DiskFormat.QCOW2]
    packed = _disk(tmp_path, compress=True).images[DiskFormat.QCOW2]
    compressed, _allocated = _compressed_clusters(packed)
    assert compressed > 0
    assert _compressed_clusters(plain)[0] == 0
    assert packed.stat().st_size < plain.stat().st_size // 2
    info = check_safe(packed, declared_format="qcow2")
    assert info.details["compression_type"] == "zlib"
    # The guest sees the same bytes as from the raw disk made beside it.
    raw = packed.with_suffix(".raw")
    subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(packed), str(raw)],
        check=True,
    )
