"""Hand-built disk image headers for the diskformat tests (no qemu-img needed).

Every builder returns bytes of a small, *structurally valid* image unless the
caller asks for a defect, so each test changes exactly one thing.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

GiB = 1 << 30

EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_DATA_FILE = 0x44415441

QEMU_IMG = shutil.which("qemu-img")
#: Skips locally without qemu-img; under CI (CI=true) the test runs and fails.
needs_qemu_img = pytest.mark.skipif(
    QEMU_IMG is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="qemu-img is not installed (apt-get install qemu-utils)",
)


def extension(ext_type: int, data: bytes) -> bytes:
    """One qcow2 header extension, padded to 8 bytes."""
    padded = data + b"\x00" * (-len(data) % 8)
    return struct.pack(">II", ext_type, len(data)) + padded


def feature_table(entries: Sequence[tuple[int, int, str]]) -> bytes:
    """A feature name table extension: (type, bit, name) entries."""
    body = b"".join(struct.pack(">BB46s", kind, bit, name.encode()) for kind, bit, name in entries)
    return extension(EXT_FEATURE_TABLE, body)


def qcow2(
    *,
    version: int = 3,
    size: int = GiB,
    cluster_bits: int = 16,
    backing: bytes | None = None,
    backing_size: int | None = None,
    crypt_method: int = 0,
    l1_size: int | None = None,
    l1_offset: int | None = None,
    reftable_offset: int | None = None,
    reftable_clusters: int = 1,
    nb_snapshots: int = 0,
    incompatible: int = 0,
    compatible: int = 0,
    autoclear: int = 0,
    refcount_order: int = 4,
    header_length: int | None = None,
    compression_type: int = 0,
    extensions: Sequence[bytes] = (),
    end_marker: bool = True,
    file_clusters: int = 4,
) -> bytes:
    """A qcow2 image: header cluster, refcount table, refcount block, L1 table."""
    cluster = 1 << cluster_bits if 9 <= cluster_bits <= 21 else 65536
    if l1_size is None:
        l1_size = math.ceil(size / (cluster * (cluster // 8)))
    if l1_offset is None:
        l1_offset = 3 * cluster
    if reftable_offset is None:
        reftable_offset = cluster
    if header_length is None:
        header_length = 72 if version == 2 else 112
    header = struct.pack(
        ">4sIQIIQIIQQIIQ",
        b"QFI\xfb",
        version,
        0,  # backing_file_offset, patched below
        0,
        cluster_bits,
        size,
        crypt_method,
        l1_size,
        l1_offset,
        reftable_offset,
        reftable_clusters,
        nb_snapshots,
        0,
    )
    if version >= 3:
        header += struct.pack(
            ">QQQII", incompatible, compatible, autoclear, refcount_order, header_length
        )
        header += bytes([compression_type]) + b"\x00" * 7
        header = header[: max(header_length, 104)].ljust(header_length, b"\x00")
    area = header + b"".join(extensions)
    if end_marker:
        area += struct.pack(">II", 0, 0)
    if backing is not None:
        offset = len(area)
        area += backing
        size_field = len(backing) if backing_size is None else backing_size
        area = area[:8] + struct.pack(">QI", offset, size_field) + area[20:]
    image = bytearray(max(file_clusters * cluster, len(area)))
    image[: len(area)] = area
    return bytes(image)


def qed(*, size: int = GiB, backing: bytes | None = None) -> bytes:
    """A QED header (little-endian), optionally with a backing file."""
    features = 1 if backing is not None else 0
    name_offset = 64 if backing is not None else 0
    header = struct.pack(
        "<4sIIIQQQQQII",
        b"QED\x00",
        65536,
        4,
        1,
        features,
        0,
        0,
        65536,
        size,
        name_offset,
        len(backing or b""),
    )
    return (header + (backing or b"")).ljust(4096, b"\x00")


def vpc_footer(*, size: int = GiB, disk_type: int = 3) -> bytes:
    """A VHD footer (cookie 'conectix', big-endian); disk type 2 fixed, 3 dynamic, 4 diff."""
    footer = struct.pack(
        ">8sIIQI4sI4sQQI", b"conectix", 2, 0x10000, 512, 0, b"qemu", 5, b"Wi2k", size, size, 0
    )
    footer += struct.pack(">I", disk_type)
    return footer.ljust(512, b"\x00")


def vdi(*, size: int = GiB) -> bytes:
    header = bytearray(512)
    header[:40] = b"<<< QEMU VM Virtual Disk Image >>>\n".ljust(40, b"\x00")
    struct.pack_into("<II", header, 0x40, 0xBEDA107F, 0x00010001)
    struct.pack_into("<Q", header, 0x170, size)
    return bytes(header)


def vmdk_descriptor(
    extents: Sequence[str] = ("disk-flat.vmdk",), *, parent: str | None = None
) -> bytes:
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        "CID=12345678",
        "parentCID=ffffffff",
        'createType="monolithicFlat"',
    ]
    if parent is not None:
        lines.append(f'parentFileNameHint="{parent}"')
    lines.append("")
    lines.append("# Extent description")
    lines += [f'RW 2097152 FLAT "{extent}" 0' for extent in extents]
    lines.append("")
    return "\n".join(lines).encode()


def vmdk_sparse(*, capacity_sectors: int, descriptor: bytes) -> bytes:
    """A KDMV sparse extent whose embedded descriptor starts at sector 1."""
    header = struct.pack("<4sIIQQQQ", b"KDMV", 1, 3, capacity_sectors, 128, 1, 20)
    image = bytearray(512 * 32)
    image[: len(header)] = header
    image[512 : 512 + len(descriptor)] = descriptor
    return bytes(image)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


#: qemu's LUKS key-derivation benchmark fails now and then on a busy or coarse
#: CPU clock; it is the fixture's creation that failed, so it is tried again.
_QEMU_IMG_FLAKE = "Unable to get accurate CPU usage"


def qemu_img(*args: str) -> None:
    """Run qemu-img to *create* a fixture (never to inspect one)."""
    assert QEMU_IMG is not None
    for _attempt in range(10):
        done = subprocess.run([QEMU_IMG, *args], check=False, capture_output=True, text=True)
        if _QEMU_IMG_FLAKE not in done.stderr:
            break
    assert done.returncode == 0, f"qemu-img {' '.join(args)}: {done.stderr.strip()}"


def compressed_qcow2(
    path: Path, *, cluster_size: str = "64k", extended_l2: bool = False, mib: int = 4
) -> Path:
    """A qcow2 that ``qemu-img convert -c`` made (zlib) from ``mib`` MiB of compressible data.

    Each 4 KiB of the raw source holds its own offset as text, so every
    cluster compresses (qemu keeps a cluster uncompressed when that is smaller)
    and no two clusters are alike.
    """
    raw = path.with_name(path.name + ".raw")
    with raw.open("wb") as stream:
        for block in range(mib * 256):
            stream.write(f"block {block:08d} ".encode().ljust(4096, b"."))
    options = f"cluster_size={cluster_size},compression_type=zlib"
    if extended_l2:
        options += ",extended_l2=on"
    qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", options, str(raw), str(path))
    raw.unlink()
    return path


def qcow2_l2_entries(path: Path) -> list[tuple[int, int]]:
    """(file offset, value) of every allocated L2 entry of a qcow2 (the test's own reading)."""
    data = path.read_bytes()
    cluster_bits, _size, _crypt, l1_size, l1_offset = struct.unpack_from(">IQIIQ", data, 20)
    incompatible = struct.unpack_from(">Q", data, 72)[0]
    stride = 16 if incompatible & (1 << 4) else 8
    entries = []
    for index in range(l1_size):
        table = struct.unpack_from(">Q", data, l1_offset + 8 * index)[0] & 0x00FFFFFFFFFFFE00
        if not table:
            continue
        for at in range(table, table + (1 << cluster_bits), stride):
            value = struct.unpack_from(">Q", data, at)[0]
            if value:
                entries.append((at, value))
    return entries


def compressed_entry(entry: int, cluster_bits: int) -> tuple[int, int]:
    """(byte offset, sectors used) of a compressed L2 entry, as qcow2.txt defines them."""
    x = 62 - (cluster_bits - 8)
    return entry & ((1 << x) - 1), (entry >> x & ((1 << (62 - x)) - 1)) + 1


def with_u64(path: Path, at: int, value: int) -> Path:
    """The file with the big-endian 64-bit word at ``at`` replaced."""
    with path.open("r+b") as stream:
        stream.seek(at)
        stream.write(value.to_bytes(8, "big"))
    return path
