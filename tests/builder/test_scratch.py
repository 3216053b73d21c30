"""The raw disk in memory (a memfd) or in a file: real sfdisk, mkfs.ext4 and qemu-img."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagefactory.builder import assemble, scratch
from imagefactory.vocab import DiskFormat
from tests.builder.trees import bios_tree

GIB = 1 << 30


def test_memory_available_is_capped_by_the_cgroup_limit(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:   8388608 kB\n")
    assert scratch.memory_available(meminfo, tmp_path / "no-cgroup") == 8 * GIB
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    ours = next((line[3:] for line in lines if line.startswith("0::")), None)
    if ours is None:
        pytest.skip("no cgroup v2 line in /proc/self/cgroup")
    group = tmp_path / "cg" / ours.lstrip("/")
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{3 * GIB}\n")
    (group / "memory.current").write_text(f"{GIB}\n")
    assert scratch.memory_available(meminfo, tmp_path / "cg") == 2 * GIB
    (group / "memory.max").write_text("max\n")
    assert scratch.memory_available(meminfo, tmp_path / "cg") == 8 * GIB


def test_a_disk_fits_in_memory_only_with_the_margin_left() -> None:
    assert scratch.fits_in_memory(2 * GIB, available=3 * GIB)
    assert not scratch.fits_in_memory(2 * GIB, available=3 * GIB - 1)


def test_a_memory_disk_is_a_memfd_the_tools_write_and_that_goes_with_its_fd(
    tmp_path: Path,
) -> None:
    with scratch.raw_disk(tmp_path / "d.raw", 1 << 20, in_memory=True) as raw:
        assert raw.in_memory
        (fd,) = raw.pass_fds
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={raw.path}", "bs=512", "count=1", "conv=notrunc"],
            check=True,
            capture_output=True,
            pass_fds=raw.pass_fds,
        )
        assert os.fstat(fd).st_size == 1 << 20
        assert Path(os.readlink(raw.path)).name.startswith("memfd:d.raw")
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert not (tmp_path / "d.raw").exists()


def test_a_file_disk_is_a_sparse_file_left_for_the_caller(tmp_path: Path) -> None:
    with scratch.raw_disk(tmp_path / "d.raw", 1 << 30, in_memory=False) as raw:
        assert not raw.in_memory
        assert raw.path == tmp_path / "d.raw"
    st = (tmp_path / "d.raw").stat()
    assert st.st_size == 1 << 30
    assert st.st_blocks == 0


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sfdisk", "mkfs.ext4", "qemu-img", "debugfs")),
    reason="needs sfdisk, mkfs.ext4, qemu-img and debugfs",
)
@pytest.mark.parametrize("in_memory", [True, False])
def test_the_disk_made_in_memory_or_on_disk_holds_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    monkeypatch.setattr(assemble, "fits_in_memory", lambda size: in_memory)
    prepared = bios_tree(tmp_path, os.urandom(3 << 20))
    data = (prepared.tree / "etc/data").read_bytes()
    log = io.StringIO()
    disk = assemble.make_disk(
        prepared, tmp_path, formats=(DiskFormat.QCOW2,), basename="wn", logfile=log
    )
    assert ("/proc/self/fd/" in log.getvalue()) is in_memory
    qcow2 = disk.images[DiskFormat.QCOW2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wn.qcow2"]  # no raw, no tree
    raw = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", qcow2, raw], check=True)
    with raw.open("rb") as f:
        mbr = f.read(512)
    assert mbr[:440] == b"b" * 440
    assert mbr[510:] == b"\x55\xaa"
    fs = f"{raw}?offset={prepared.layout.root_start * assemble.SECTOR}"
    out = tmp_path / "data"
    subprocess.run(["debugfs", "-R", f"dump /etc/data {out}", fs], check=True, capture_output=True)
    assert out.read_bytes() == data
