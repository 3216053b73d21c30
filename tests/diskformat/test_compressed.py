"""Compressed qcow2 clusters (``qemu-img convert -c``): accepted as qemu writes them,
refused when a compressed descriptor points where qemu would read outside the file.

A compressed L2 entry (docs/interop/qcow2.txt, "Compressed Clusters
Descriptor") packs a byte offset and a count of 512-byte sectors into one
word whose split depends on cluster_bits, so each case runs on images
qemu-img made at several cluster sizes; the hostile ones change one entry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagefactory.diskformat import check_safe, detect
from imagefactory.diskinspect import second_opinion
from tests.fakes import diskimages as fx
from tests.fakes.diskimages import needs_qemu_img

pytestmark = needs_qemu_img

COMPRESSED = 1 << 62
COPIED = 1 << 63
#: cluster_size option -> cluster_bits: the smallest, the default and the largest.
CLUSTERS = {"512": 9, "64k": 16, "2M": 21}


def compressed_entries(path: Path) -> list[tuple[int, int]]:
    return [(at, value) for at, value in fx.qcow2_l2_entries(path) if value & COMPRESSED]


def problems(path: Path) -> list[str]:
    return [p.message for p in detect(path).problems]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One compressed image per cluster size, made once; tests edit copies."""
    base = tmp_path_factory.mktemp("compressed")
    return {
        size: fx.compressed_qcow2(base / f"c{size}.qcow2", cluster_size=size) for size in CLUSTERS
    }


def copy(made: dict[str, Path], size: str, tmp_path: Path) -> Path:
    target = tmp_path / f"c{size}.qcow2"
    shutil.copyfile(made[size], target)
    return target


@pytest.mark.parametrize("size", CLUSTERS)
def test_compressed_qcow2_from_qemu_img_is_accepted(made: dict[str, Path], size: str) -> None:
    path = made[size]
    entries = fx.qcow2_l2_entries(path)
    compressed = compressed_entries(path)
    # Every cluster of the source compresses, so qemu stored every one compressed.
    assert entries
    assert len(compressed) == len(entries)
    info = check_safe(path, declared_format="qcow2")
    assert info.details["cluster_bits"] == CLUSTERS[size]
    assert info.details["compression_type"] == "zlib"
    assert second_opinion(path, "qcow2") == []


def test_compressed_qcow2_with_extended_l2_is_accepted(tmp_path: Path) -> None:
    path = fx.compressed_qcow2(tmp_path / "x.qcow2", cluster_size="128k", extended_l2=True)
    assert compressed_entries(path)
    assert check_safe(path).details["incompatible_features"] == 1 << 4


@pytest.mark.parametrize("size", CLUSTERS)
def test_compressed_cluster_past_the_end_of_the_file_is_refused(
    made: dict[str, Path], size: str, tmp_path: Path
) -> None:
    path = copy(made, size, tmp_path)
    at, entry = compressed_entries(path)[0]
    _offset, sectors = fx.compressed_entry(entry, CLUSTERS[size])
    x = 62 - (CLUSTERS[size] - 8)
    outside = path.stat().st_size + 4096
    fx.with_u64(path, at, COMPRESSED | (sectors - 1) << x | outside)
    [message] = problems(path)
    assert f"a compressed cluster at offset {outside}" in message
    assert f"runs past the end of the {path.stat().st_size}-byte file" in message


@pytest.mark.parametrize("size", ["64k", "2M"])
def test_compressed_cluster_whose_sectors_run_past_the_end_is_refused(
    made: dict[str, Path], size: str, tmp_path: Path
) -> None:
    """The offset is inside the file; the sector count takes the read beyond it."""
    path = copy(made, size, tmp_path)
    bits = CLUSTERS[size]
    x = 62 - (bits - 8)
    at, entry = max(compressed_entries(path), key=lambda e: fx.compressed_entry(e[1], bits)[0])
    offset, _sectors = fx.compressed_entry(entry, bits)
    fx.with_u64(path, at, COMPRESSED | ((1 << (62 - x)) - 1) << x | offset)
    [message] = problems(path)
    assert f"a compressed cluster at offset {offset} ({1 << (62 - x)} sectors" in message
    assert "runs past the end" in message


def test_compressed_cluster_may_end_in_the_files_partial_last_sector(
    made: dict[str, Path], tmp_path: Path
) -> None:
    """qemu reads zeros past the end, so a last sector cut short is no hostile read."""
    path = copy(made, "64k", tmp_path)
    last_end = max(o - o % 512 + s * 512 for o, s in _decoded(path, 16))
    assert last_end == path.stat().st_size  # what qemu wrote: to the sector's end
    with path.open("r+b") as stream:
        stream.truncate(last_end - 100)
    assert problems(path) == []
    with path.open("r+b") as stream:
        stream.truncate(last_end - 512)
    [message] = problems(path)
    assert "runs past the end" in message


def _decoded(path: Path, bits: int) -> list[tuple[int, int]]:
    return [fx.compressed_entry(entry, bits) for _at, entry in compressed_entries(path)]


def test_compressed_cluster_with_the_copied_bit_is_refused(
    made: dict[str, Path], tmp_path: Path
) -> None:
    path = copy(made, "64k", tmp_path)
    at, entry = compressed_entries(path)[0]
    fx.with_u64(path, at, entry | COPIED)
    [message] = problems(path)
    assert "has the copied bit (63) set" in message


def test_compressed_cluster_in_the_header_cluster_is_refused(
    made: dict[str, Path], tmp_path: Path
) -> None:
    """Compressed 'data' read from the header: a guest would see the image's own metadata."""
    path = copy(made, "64k", tmp_path)
    at, _entry = compressed_entries(path)[0]
    fx.with_u64(path, at, COMPRESSED | 100)
    [message] = problems(path)
    assert "a compressed cluster at offset 100 (1 sectors, to byte 512) lies in the header" in (
        message
    )


def test_compressed_offset_bits_above_55_are_refused(made: dict[str, Path], tmp_path: Path) -> None:
    """With 512-byte clusters the offset field is 61 bits wide; bits 56-60 must be zero."""
    path = copy(made, "512", tmp_path)
    at, entry = compressed_entries(path)[0]
    fx.with_u64(path, at, entry | 1 << 58)
    [message] = problems(path)
    assert "sets offset bits above 55" in message


def test_compressed_cluster_with_a_subcluster_bitmap_is_refused(tmp_path: Path) -> None:
    path = fx.compressed_qcow2(tmp_path / "x.qcow2", cluster_size="128k", extended_l2=True)
    at, _entry = compressed_entries(path)[0]
    fx.with_u64(path, at + 8, 1)
    [message] = problems(path)
    assert "has a subcluster bitmap (0x0000000000000001)" in message


def test_standard_cluster_past_the_end_with_extended_l2_is_refused(tmp_path: Path) -> None:
    """Extended L2 tables are now read too: a standard entry past the end is refused."""
    path = fx.compressed_qcow2(tmp_path / "x.qcow2", cluster_size="128k", extended_l2=True)
    at, _entry = compressed_entries(path)[0]
    fx.with_u64(path, at, (1 << 40) | COPIED)
    [message] = problems(path)
    assert f"maps data to offset {1 << 40}, outside the" in message
