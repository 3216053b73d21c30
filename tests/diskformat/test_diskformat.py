"""Threat tests for imagefactory.diskformat (THREATS.md, "Disk formats").

Each test is named after the threat it covers and asserts the specific reason
code and text. Hand-built headers (tests/fakes/diskimages.py) cover every case without
qemu-img; tests marked ``needs_qemu_img`` repeat key cases on real images.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from imagefactory import diskformat
from imagefactory.diskformat import (
    REASONS,
    DiskInfo,
    UnsafeImageError,
    check_safe,
    detect,
)
from imagefactory.errors import InputError
from tests.fakes import diskimages as fx
from tests.fakes.diskimages import GiB, needs_qemu_img


def refuse(path: Path, **kwargs: object) -> UnsafeImageError:
    """check_safe must refuse; return the error for assertions."""
    with pytest.raises(UnsafeImageError) as info:
        check_safe(path, **kwargs)  # type: ignore[arg-type]
    error = info.value
    for code, message in zip(error.codes, error.reasons, strict=True):
        assert code in REASONS
        assert message.startswith(f"{path}: ")
        assert "; fix: " in message
    return error


def reason(error: UnsafeImageError, code: str) -> str:
    """The single reason with this code (fails if absent)."""
    found = [m for c, m in zip(error.codes, error.reasons, strict=True) if c == code]
    assert found, f"no {code!r} in {error.codes}"
    return found[0]


# --------------------------------------------------------------------------- happy paths


def test_clean_hand_built_qcow2_v3_passes(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "clean.qcow2", fx.qcow2(size=3 * GiB))
    info = check_safe(path)
    assert info.format == "qcow2"
    assert info.virtual_size == 3 * GiB
    assert info.file_size == 4 * 65536
    assert info.backing_file is None
    assert info.data_file is None
    assert info.details["version"] == 3
    assert info.problems == ()


def test_clean_hand_built_qcow2_v2_passes(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "v2.qcow2", fx.qcow2(version=2))
    info = check_safe(path, declared_format="qcow2")
    assert (info.format, info.virtual_size, info.details["version"]) == ("qcow2", GiB, 2)


def test_clean_raw_passes_with_file_size_as_virtual_size(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    with path.open("wb") as handle:
        handle.write(b"\xeb\x63\x90" + b"\x00" * 507 + b"\x55\xaa")  # an MBR-ish sector
        handle.truncate(64 * 1024 * 1024)
    info = check_safe(path, declared_format="raw")
    assert info.format == "raw"
    assert info.virtual_size == info.file_size == 64 * 1024 * 1024


@needs_qemu_img
def test_clean_qcow2_from_qemu_img_passes(tmp_path: Path) -> None:
    path = tmp_path / "clean.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", str(path), "10G")
    info = check_safe(path, declared_format="qcow2")
    assert info.virtual_size == 10 * GiB
    assert info.backing_file is None


@needs_qemu_img
def test_clean_qcow2_v2_compat_from_qemu_img_passes(tmp_path: Path) -> None:
    path = tmp_path / "compat.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(path), "1G")
    assert check_safe(path).details["version"] == 2


@needs_qemu_img
def test_qcow2_extended_l2_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "l2.qcow2"
    fx.qemu_img(
        "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", str(path), "1G"
    )
    assert check_safe(path).details["incompatible_features"] == 1 << 4


# --------------------------------------------------------------------------- format confusion


def test_format_confusion_raw_declared_but_qcow2_header(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "disk.raw", fx.qcow2())
    error = refuse(path, declared_format="raw")
    assert error.codes == ["format-confusion"]
    assert "declared raw, but the file carries a QEMU qcow2 header" in error.reasons[0]
    assert detect(path).format == "qcow2"


@needs_qemu_img
def test_format_confusion_raw_declared_qemu_img_qcow2_with_backing(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    fx.qemu_img(
        "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", "-u", str(path), "1G"
    )
    error = refuse(path, declared_format="raw")
    assert set(error.codes) == {"format-confusion", "qcow2-backing-file"}


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"KDMV" + b"\x00" * 508, "vmdk"),
        (b"vhdxfile" + b"\x00" * 504, "vhdx"),
        (b"QED\x00" + b"\x00" * 508, "qed"),
        (b"LUKS\xba\xbe\x00\x01" + b"\x00" * 504, "luks"),
    ],
    ids=["vmdk", "vhdx", "qed", "luks"],
)
def test_format_confusion_raw_declared_but_other_known_header(
    tmp_path: Path, data: bytes, detected: str
) -> None:
    path = fx.write(tmp_path / "disk.raw", data)
    error = refuse(path, declared_format="raw")
    assert "format-confusion" in error.codes
    assert f"would open it as {detected}" in reason(error, "format-confusion")


def test_format_mismatch_declared_qcow2_but_raw(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "disk.qcow2", b"\x00" * 4096)
    error = refuse(path, declared_format="qcow2")
    assert error.codes == ["format-mismatch"]
    assert "declared format qcow2 but the headers say raw" in error.reasons[0]


def test_format_declared_vhd_alias_matches_vpc(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "disk.vhd", fx.vpc_footer() + b"\x00" * 1024)
    info = check_safe(path, declared_format="vhd", allowed_formats=("vpc",))
    assert (info.format, info.virtual_size) == ("vpc", GiB)


def test_format_declared_unknown_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "disk", b"\x00" * 4096)
    error = refuse(path, declared_format="qcow3")
    assert error.codes == ["declared-format-unknown"]
    assert "declared format 'qcow3' is not a known disk format" in error.reasons[0]


def test_format_declared_not_allowed_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "disk", b"\x00" * 4096)
    error = refuse(path, declared_format="vdi")
    assert error.codes == ["format-mismatch", "format-not-allowed"]
    assert "declared format vdi is not allowed" in error.reasons[1]


# --------------------------------------------------------------------------- qcow2: references


@pytest.mark.parametrize(
    ("name", "wording"),
    [
        (b"/etc/shadow", "an absolute host path as backing file '/etc/shadow'"),
        (b"/dev/sda", "a host device as backing file '/dev/sda'"),
        (b"http://attacker.example/x.img", "a network backing file (URL)"),
        (b"nbd://10.0.0.1:10809/export", "a network backing file (URL)"),
        (
            b'json:{"driver":"file","filename":"/etc/shadow"}',
            "a json: pseudo-protocol backing file",
        ),
        (b"base.qcow2", "a backing file 'base.qcow2'"),
    ],
    ids=["etc-shadow", "host-device", "http-url", "nbd-url", "json-pseudo-protocol", "relative"],
)
def test_qcow2_backing_file_is_refused(tmp_path: Path, name: bytes, wording: str) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(backing=name))
    error = refuse(path)
    assert error.codes == ["qcow2-backing-file"]
    assert f"qcow2 names {wording}" in error.reasons[0]
    assert "qemu-img convert -O qcow2" in error.reasons[0]
    assert detect(path).backing_file == name.decode()


def test_qcow2_backing_file_name_is_shown_escaped(tmp_path: Path) -> None:
    name = b"/etc/shadow\n\x1b[2Jok\xff"
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(backing=name))
    message = refuse(path).reasons[0]
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\\n\\x1b[2Jok\\\\xff" in message


def test_qcow2_backing_file_name_too_long_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(backing=b"/etc/x", backing_size=5000))
    message = reason(refuse(path), "qcow2-backing-file")
    assert "name length 5000 exceeds the 1023-byte limit" in message


def test_qcow2_backing_format_extension_without_backing_is_refused(tmp_path: Path) -> None:
    ext = fx.extension(fx.EXT_BACKING_FORMAT, b"raw")
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[ext]))
    message = reason(refuse(path), "qcow2-header-extension")
    assert "backing-format extension 'raw' but no backing file" in message


@needs_qemu_img
@pytest.mark.parametrize(
    "backing",
    ["/etc/shadow", 'json:{"driver":"file","filename":"/etc/shadow"}', "http://example.com/b"],
    ids=["etc-shadow", "json", "http"],
)
def test_qcow2_backing_file_from_qemu_img_is_refused(tmp_path: Path, backing: str) -> None:
    path = tmp_path / "img.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", "-u", str(path), "1G")
    error = refuse(path)
    assert error.codes == ["qcow2-backing-file"]
    assert repr(backing) in error.reasons[0]


def test_qcow2_external_data_file_extension_is_refused(tmp_path: Path) -> None:
    ext = fx.extension(fx.EXT_DATA_FILE, b"/dev/sda")
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(incompatible=1 << 2, extensions=[ext]))
    error = refuse(path)
    assert error.codes == ["qcow2-data-file", "qcow2-data-file"]
    assert (
        "qcow2 names an external data file '/dev/sda' (header extension 0x44415441)"
        in (error.reasons[0])
    )
    assert "external data file bit is set (incompatible feature bit 2)" in error.reasons[1]
    assert detect(path).data_file == "/dev/sda"


def test_qcow2_external_data_file_extension_without_bit_is_refused(tmp_path: Path) -> None:
    ext = fx.extension(fx.EXT_DATA_FILE, b"/etc/shadow")
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[ext]))
    assert refuse(path).codes == ["qcow2-data-file"]


def test_qcow2_raw_external_data_autoclear_bit_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(autoclear=1 << 1))
    error = refuse(path)
    assert error.codes == ["qcow2-data-file"]
    assert "raw external data bit is set (autoclear bit 1)" in error.reasons[0]


@needs_qemu_img
def test_qcow2_external_data_file_from_qemu_img_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "img.qcow2"
    data = tmp_path / "data.raw"
    fx.qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(path), "1G")
    error = refuse(path)
    assert set(error.codes) == {"qcow2-data-file"}
    assert detect(path).data_file == str(data)


def test_qcow2_encryption_is_refused(tmp_path: Path) -> None:
    for method, name in ((1, "AES"), (2, "LUKS"), (7, "unknown method 7")):
        path = fx.write(tmp_path / f"enc{method}.qcow2", fx.qcow2(crypt_method=method))
        message = reason(refuse(path), "qcow2-encrypted")
        assert f"crypt_method {method}: {name}" in message


def test_qcow2_encryption_header_extension_is_refused(tmp_path: Path) -> None:
    ext = fx.extension(fx.EXT_CRYPTO_HEADER, struct.pack(">QQ", 65536, 4096))
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[ext]))
    assert "full disk encryption header extension" in reason(refuse(path), "qcow2-encrypted")


# --------------------------------------------------------------------------- qcow2: features


def test_qcow2_unknown_incompatible_feature_bit_is_refused(tmp_path: Path) -> None:
    table = fx.feature_table([(0, 5, "evil"), (0, 0, "dirty bit")])
    path = fx.write(
        tmp_path / "img.qcow2", fx.qcow2(incompatible=(1 << 5) | (1 << 63), extensions=[table])
    )
    error = refuse(path)
    assert error.codes == ["qcow2-incompatible-features"]
    assert "unknown incompatible feature bits 5 ('evil'), 63" in error.reasons[0]


def test_qcow2_dirty_bit_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(incompatible=1 << 0))
    error = refuse(path)
    assert error.codes == ["qcow2-dirty"]
    assert "qcow2 dirty bit is set" in error.reasons[0]
    assert "qemu-img check -r all" in error.reasons[0]


def test_qcow2_corrupt_bit_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(incompatible=1 << 1))
    error = refuse(path)
    assert error.codes == ["qcow2-corrupt"]
    assert "qcow2 corrupt bit is set" in error.reasons[0]


def test_qcow2_zstd_compression_type_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(incompatible=1 << 3, compression_type=1))
    error = refuse(path)
    assert error.codes == ["qcow2-compression-type"]
    assert (
        "compression type zstd (incompatible feature bit 3); policy accepts zlib only"
        in (error.reasons[0])
    )


def test_qcow2_compression_type_field_without_bit_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(compression_type=1))
    message = reason(refuse(path), "qcow2-compression-type")
    assert "compression type bit is clear: inconsistent header" in message


@needs_qemu_img
def test_qcow2_zstd_compression_from_qemu_img_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "img.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", str(path), "1G")
    assert refuse(path).codes == ["qcow2-compression-type"]


# --------------------------------------------------------------------------- qcow2: header sanity


@pytest.mark.parametrize("version", [0, 4, 0xFFFFFFFF])
def test_qcow2_unsupported_version_is_refused(tmp_path: Path, version: int) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(version=version))
    error = refuse(path)
    assert error.codes == ["qcow2-version"]
    assert f"qcow2 version {version} is not 2 or 3" in error.reasons[0]


def test_qcow_version_1_is_named_and_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow", fx.qcow2(version=1))
    error = refuse(path)
    assert error.codes == ["format-not-allowed"]
    assert "format qcow (QEMU qcow (version 1)) is not allowed" in error.reasons[0]


@pytest.mark.parametrize("cluster_bits", [0, 8, 22, 63])
def test_qcow2_cluster_bits_out_of_range_is_refused(tmp_path: Path, cluster_bits: int) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(cluster_bits=cluster_bits, l1_size=16384))
    message = reason(refuse(path), "qcow2-cluster-bits")
    assert f"cluster_bits is {cluster_bits}, outside 9..21" in message


@pytest.mark.parametrize("header_length", [96, 100, 107])
def test_qcow2_bad_header_length_is_refused(tmp_path: Path, header_length: int) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(header_length=header_length))
    error = refuse(path)
    assert error.codes == ["qcow2-header-length"]
    assert f"header_length is {header_length}" in error.reasons[0]


def test_qcow2_header_length_beyond_first_cluster_is_refused(tmp_path: Path) -> None:
    path = fx.write(
        tmp_path / "img.qcow2", fx.qcow2(cluster_bits=9, size=1 << 20, header_length=1024)
    )
    message = reason(refuse(path), "qcow2-header-length")
    assert "header_length 1024 exceeds the first cluster (512 bytes)" in message


def test_qcow2_refcount_order_too_large_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(refcount_order=7))
    assert "refcount_order is 7" in reason(refuse(path), "qcow2-refcount-order")


def test_qcow2_header_extension_overrun_is_refused(tmp_path: Path) -> None:
    bogus = struct.pack(">II", 0x12345678, 0x7FFFFFFF)
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[bogus]))
    message = reason(refuse(path), "qcow2-header-extension")
    assert "extension 0x12345678 at offset 112 claims 2147483647 bytes and overruns" in message


def test_qcow2_header_extension_without_end_marker_is_refused(tmp_path: Path) -> None:
    filler = fx.extension(0x0BADF00D, b"\xaa" * (65536 - 112 - 8))
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[filler], end_marker=False))
    message = reason(refuse(path), "qcow2-header-extension")
    assert "has no end marker within the first 65536 bytes" in message


def test_qcow2_duplicate_header_extension_is_refused(tmp_path: Path) -> None:
    table = fx.feature_table([(0, 0, "dirty bit")])
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[table, table]))
    message = reason(refuse(path), "qcow2-header-extension")
    assert "0x6803f857 (feature name table) appears more than once" in message


def test_qcow2_unknown_header_extension_is_recorded_not_refused(tmp_path: Path) -> None:
    ext = fx.extension(0x0BADF00D, b"whatever")
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(extensions=[ext]))
    assert check_safe(path).details["unknown_extensions"] == ("0x0badf00d",)


def test_qcow2_l1_table_too_small_for_virtual_size_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(size=100 * GiB, l1_size=1))
    message = reason(refuse(path), "qcow2-layout")
    assert "L1 table has 1 entries but the virtual size 100 GiB" in message


def test_qcow2_l1_table_past_end_of_file_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(l1_offset=1 << 40))
    message = reason(refuse(path), "qcow2-layout")
    assert f"entries at offset {1 << 40}) extends past the end" in message


def test_qcow2_l1_table_overlapping_header_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(l1_offset=0))
    assert "L1 table offset 0 is not a cluster-aligned offset" in reason(
        refuse(path), "qcow2-layout"
    )


def test_qcow2_refcount_table_misplaced_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(reftable_offset=12345, reftable_clusters=0))
    error = refuse(path)
    assert error.codes == ["qcow2-layout", "qcow2-layout"]
    assert "refcount table offset 12345 is not a cluster-aligned offset" in error.reasons[0]
    assert "refcount table size of 0 clusters is invalid" in error.reasons[1]


def test_qcow2_internal_snapshots_are_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(nb_snapshots=2))
    assert "carries 2 internal snapshot(s)" in reason(refuse(path), "qcow2-snapshots")


@pytest.mark.parametrize("length", [4, 40, 71])
def test_qcow2_truncated_header_is_refused(tmp_path: Path, length: int) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2()[:length])
    message = reason(refuse(path), "truncated-header")
    assert f"qcow2 header is truncated: {length} bytes" in message


def test_qcow2_v3_truncated_header_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2()[:90])
    assert "qcow2 v3 header is truncated: 90 bytes" in reason(refuse(path), "truncated-header")


# --------------------------------------------------------------------------- sizes


def test_virtual_size_1_eib_qcow2_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "bomb.qcow2", fx.qcow2(size=1 << 60, l1_size=1))
    error = refuse(path)
    message = reason(error, "virtual-size-too-large")
    assert "virtual size 1 EiB (1152921504606846976 bytes) exceeds the limit 256 GiB" in message
    assert "qcow2-layout" in error.codes  # and its L1 table cannot even address it


@needs_qemu_img
def test_virtual_size_over_cap_from_qemu_img_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", str(path), "300G")
    error = refuse(path)
    assert error.codes == ["virtual-size-too-large"]
    assert check_safe(path, max_virtual_size=512 * GiB).virtual_size == 300 * GiB


def test_virtual_size_cap_is_configurable(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(size=8 * GiB))
    assert check_safe(path).virtual_size == 8 * GiB
    assert refuse(path, max_virtual_size=4 * GiB).codes == ["virtual-size-too-large"]


def test_virtual_size_ratio_cap_when_asked(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qcow2", fx.qcow2(size=8 * GiB))
    error = refuse(path, max_ratio=1000)
    assert error.codes == ["virtual-size-ratio"]
    assert "is more than 1000 times the file size" in error.reasons[0]


def test_virtual_size_raw_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.raw"
    with path.open("wb") as handle:
        handle.truncate(257 * GiB)  # sparse
    error = refuse(path)
    assert error.codes == ["virtual-size-too-large"]


# --------------------------------------------------------------------------- VMDK


def test_vmdk_descriptor_with_extent_paths_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "d.vmdk", fx.vmdk_descriptor(["/etc/shadow", "/dev/sda"]))
    error = refuse(path, allowed_formats=("qcow2", "raw", "vmdk"), declared_format="vmdk")
    assert error.codes == ["vmdk-extent"]
    assert "references extent file(s) '/etc/shadow', '/dev/sda'" in error.reasons[0]
    assert detect(path).details["extents"] == ("/etc/shadow", "/dev/sda")


@pytest.mark.parametrize("space", ["\v", "\f", "\r", " \t\v"])
def test_vmdk_extent_with_separators_qemu_accepts_is_seen(tmp_path: Path, space: str) -> None:
    """qemu's sscanf splits extent fields on any whitespace, not only spaces and tabs."""
    line = space.join(["RW", "2097152", "FLAT", '"/etc/shadow"', "0"])
    text = f'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n{line}\n'
    path = fx.write(tmp_path / "d.vmdk", text.encode())
    assert detect(path).details["extents"] == ("/etc/shadow",)


def test_vmdk_descriptor_is_refused_by_default_policy(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "d.vmdk", fx.vmdk_descriptor())
    assert refuse(path).codes == ["vmdk-extent", "format-not-allowed"]


def test_vmdk_descriptor_detected_by_qemu_probe_rule(tmp_path: Path) -> None:
    text = b'# comment\n   \nversion=1\nRW 8 FLAT "/etc/shadow" 0\n'
    path = fx.write(tmp_path / "d.img", text)
    assert detect(path).format == "vmdk"
    assert "format-confusion" in refuse(path, declared_format="raw").codes


def test_vmdk_sparse_with_zero_capacity_follows_embedded_extents_and_is_refused(
    tmp_path: Path,
) -> None:
    data = fx.vmdk_sparse(capacity_sectors=0, descriptor=fx.vmdk_descriptor(["/etc/shadow"]))
    path = fx.write(tmp_path / "s.vmdk", data)
    error = refuse(path, allowed_formats=("vmdk",))
    assert error.codes == ["vmdk-extent"]
    assert "'/etc/shadow'" in error.reasons[0]


def test_vmdk_sparse_with_own_extent_passes_when_vmdk_allowed(tmp_path: Path) -> None:
    data = fx.vmdk_sparse(capacity_sectors=2048, descriptor=fx.vmdk_descriptor(["s.vmdk"]))
    path = fx.write(tmp_path / "s.vmdk", data)
    info = check_safe(path, allowed_formats=("vmdk",))
    assert (info.format, info.virtual_size) == ("vmdk", 2048 * 512)


def test_vmdk_parent_hint_is_refused(tmp_path: Path) -> None:
    data = fx.vmdk_sparse(
        capacity_sectors=2048, descriptor=fx.vmdk_descriptor(["s.vmdk"], parent="/etc/shadow")
    )
    path = fx.write(tmp_path / "s.vmdk", data)
    error = refuse(path, allowed_formats=("vmdk",))
    assert error.codes == ["vmdk-parent"]
    assert "VMDK names a parent image '/etc/shadow'" in error.reasons[0]


@needs_qemu_img
def test_vmdk_flat_extent_from_qemu_img_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.vmdk"
    fx.qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(path), "1M")
    error = refuse(path, allowed_formats=("vmdk",))
    assert error.codes == ["vmdk-extent"]
    assert "'v-flat.vmdk'" in error.reasons[0]


# --------------------------------------------------------------------------- other formats


def _iso() -> bytes:
    data = bytearray(0x9000)
    data[0x8001:0x8006] = b"CD001"
    return bytes(data)


def _vpc_fixed() -> bytes:
    return b"\x00" * 4096 + fx.vpc_footer(disk_type=2)


def _dmg() -> bytes:
    return b"\x00" * 4096 + b"koly" + b"\x00" * 508


@pytest.mark.parametrize(
    ("data", "fmt", "title"),
    [
        (fx.qed(), "qed", "QEMU QED"),
        (b"vhdxfile" + b"\x00" * 4088, "vhdx", "Hyper-V VHDX"),
        (fx.vpc_footer() + b"\x00" * 1024, "vpc", "Virtual PC VHD"),
        (_vpc_fixed(), "vpc", "Virtual PC VHD"),
        (fx.vdi(), "vdi", "VirtualBox VDI"),
        (b"LUKS\xba\xbe\x00\x02" + b"\x00" * 4088, "luks", "LUKS encrypted volume"),
        (b"WithoutFreeSpace" + b"\x00" * 496, "parallels", "Parallels"),
        (b"Bochs Virtual HD Image\x00" + b"\x00" * 489, "bochs", "Bochs"),
        (
            b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 "
            b"/dev/cloop $1\n",
            "cloop",
            "cloop compressed loopback",
        ),
        (_dmg(), "dmg", "Apple DMG"),
        (_iso(), "iso", "ISO 9660 (CD image, not a disk image)"),
        (b"COWD" + b"\x00" * 508, "vmdk", "VMware VMDK"),
    ],
    ids=[
        "qed",
        "vhdx",
        "vpc-dynamic",
        "vpc-fixed-footer",
        "vdi",
        "luks",
        "parallels",
        "bochs",
        "cloop",
        "dmg",
        "iso",
        "vmdk3",
    ],
)
def test_format_not_allowed_is_refused_by_name(
    tmp_path: Path, data: bytes, fmt: str, title: str
) -> None:
    path = fx.write(tmp_path / "img", data)
    assert detect(path).format == fmt
    error = refuse(path)
    assert "format-not-allowed" in error.codes
    assert f"format {fmt} ({title}) is not allowed (allowed: qcow2, raw)" in reason(
        error, "format-not-allowed"
    )


@needs_qemu_img
@pytest.mark.parametrize("fmt", ["qed", "vdi", "vhdx", "vpc", "vmdk", "luks"])
def test_format_not_allowed_from_qemu_img_is_refused_by_name(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"img.{fmt}"
    args = ["create", "-q", "-f", fmt]
    if fmt == "luks":
        args += ["--object", "secret,id=s0,data=x", "-o", "key-secret=s0,iter-time=100"]
    fx.qemu_img(*args, str(path), "64M")
    info = detect(path)
    assert info.format == fmt
    assert f"format {fmt} (" in reason(refuse(path), "format-not-allowed")
    if fmt in {"qed", "vdi", "vpc", "vmdk"}:
        assert info.virtual_size >= 64 * 1024 * 1024


def test_qed_backing_file_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.qed", fx.qed(backing=b"/etc/shadow"))
    error = refuse(path, allowed_formats=("qed",))
    assert error.codes == ["qed-backing-file"]
    assert "QED names a backing file '/etc/shadow'" in error.reasons[0]


def test_vpc_differencing_disk_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "img.vhd", fx.vpc_footer(disk_type=4) + b"\x00" * 1024)
    error = refuse(path, allowed_formats=("vpc",))
    assert error.codes == ["vpc-parent"]


# --------------------------------------------------------------------------- file kinds


def test_symlink_to_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "disk.qcow2"
    link.symlink_to("/dev/sda")  # need not exist: it is never followed
    error = refuse(link)
    assert error.codes == ["not-regular-file"]
    assert "is a symbolic link, not a regular file" in error.reasons[0]


def test_symlink_to_regular_image_is_refused(tmp_path: Path) -> None:
    target = fx.write(tmp_path / "real.qcow2", fx.qcow2())
    link = tmp_path / "link.qcow2"
    link.symlink_to(target)
    with pytest.raises(UnsafeImageError) as info:
        detect(link)
    assert info.value.codes == ["not-regular-file"]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "disk.raw"
    os.mkfifo(fifo)
    error = refuse(fifo)  # would hang if opened for reading without a writer
    assert error.codes == ["not-regular-file"]
    assert "is a fifo" in error.reasons[0]


def test_device_node_is_refused(tmp_path: Path) -> None:
    error = refuse(Path("/dev/null"))
    assert error.codes == ["not-regular-file"]
    assert "is a character device" in error.reasons[0]


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in refuse(tmp_path).reasons[0]


def test_missing_file_is_refused(tmp_path: Path) -> None:
    error = refuse(tmp_path / "nope.qcow2")
    assert error.codes == ["cannot-open"]
    assert "cannot stat: No such file or directory" in error.reasons[0]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "empty.raw", b"")
    error = refuse(path)
    assert error.codes == ["empty-file"]
    assert "the file is empty (0 bytes)" in error.reasons[0]
    assert detect(path) == DiskInfo(format="raw", virtual_size=0, file_size=0)


# --------------------------------------------------------------------------- cross-cutting


def test_every_reason_is_listed_at_once(tmp_path: Path) -> None:
    ext = fx.extension(fx.EXT_DATA_FILE, b"/dev/sda")
    data = fx.qcow2(
        size=1 << 60,
        l1_size=1,
        backing=b"/etc/shadow",
        incompatible=(1 << 0) | (1 << 9),
        crypt_method=1,
        nb_snapshots=1,
        extensions=[ext],
    )
    path = fx.write(tmp_path / "evil.raw", data)
    error = refuse(path, declared_format="raw")
    assert set(error.codes) >= {
        "format-confusion",
        "qcow2-backing-file",
        "qcow2-data-file",
        "qcow2-dirty",
        "qcow2-incompatible-features",
        "qcow2-encrypted",
        "qcow2-snapshots",
        "qcow2-layout",
        "virtual-size-too-large",
    }
    rendered = error.render()
    assert rendered.startswith(f"refusing disk image {path}: {len(error.codes)} problems")
    assert all(f"[{code}]" in rendered for code in error.codes)


def test_unsafe_image_error_is_an_input_error(tmp_path: Path) -> None:
    error = refuse(fx.write(tmp_path / "e", b""))
    assert isinstance(error, InputError)
    assert error.exit_code == 1
    assert error.path == tmp_path / "e"


def test_reads_are_capped_on_a_huge_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.raw"
    with path.open("wb") as handle:
        handle.truncate(100 * GiB)
    reads: list[tuple[int, int]] = []
    real_pread = os.pread

    def spy(fd: int, size: int, offset: int) -> bytes:
        reads.append((size, offset))
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", spy)
    info = detect(path)
    assert info.virtual_size == 100 * GiB
    assert sum(size for size, _ in reads) <= diskformat.HEADER_CAP + diskformat.TAIL_SIZE
    assert all(
        offset < diskformat.HEADER_CAP or offset == 100 * GiB - diskformat.TAIL_SIZE
        for _, offset in reads
    )


def test_allowed_formats_with_unknown_name_is_a_programming_error(tmp_path: Path) -> None:
    path = fx.write(tmp_path / "x", b"\x00" * 512)
    with pytest.raises(ValueError, match="unknown formats"):
        check_safe(path, allowed_formats=("qcow2", "qcow3"))


def test_reason_vocabulary_is_stable() -> None:
    expected = {
        "cannot-open",
        "not-regular-file",
        "empty-file",
        "truncated-header",
        "declared-format-unknown",
        "format-confusion",
        "format-inspector",
        "format-mismatch",
        "format-not-allowed",
        "virtual-size-too-large",
        "virtual-size-ratio",
        "qcow2-version",
        "qcow2-backing-file",
        "qcow2-data-file",
        "qcow2-encrypted",
        "qcow2-dirty",
        "qcow2-corrupt",
        "qcow2-compression-type",
        "qcow2-incompatible-features",
        "qcow2-cluster-bits",
        "qcow2-refcount-order",
        "qcow2-header-length",
        "qcow2-header-extension",
        "qcow2-layout",
        "qcow2-snapshots",
        "vmdk-extent",
        "vmdk-parent",
        "qed-backing-file",
        "vpc-parent",
    }
    assert set(REASONS) == expected


def test_module_runs_no_external_tool() -> None:
    """Pure Python: the module starts no process (only the fixtures may run qemu-img)."""
    source = Path(diskformat.__file__).read_text()
    for forbidden in ("subprocess", "os.system", "os.popen", "os.exec", "os.spawn"):
        assert forbidden not in source


def test_vmdk_sparse_zero_capacity_descriptor_without_extents_is_refused(tmp_path: Path) -> None:
    data = fx.vmdk_sparse(capacity_sectors=0, descriptor=b"# Disk DescriptorFile\nversion=1\n")
    path = fx.write(tmp_path / "s.vmdk", data)
    message = reason(refuse(path, allowed_formats=("vmdk",)), "vmdk-extent")
    assert "capacity 0 and an embedded descriptor" in message


def test_vmdk_descriptor_larger_than_read_cap_is_refused(tmp_path: Path) -> None:
    text = fx.vmdk_descriptor(["a.vmdk"]) + b"#" * (diskformat.HEADER_CAP + 10)
    path = fx.write(tmp_path / "d.vmdk", text)
    error = refuse(path, allowed_formats=("vmdk",))
    assert error.codes == ["vmdk-extent", "vmdk-extent"]  # a.vmdk, and the unread rest
    assert f"more than the {diskformat.HEADER_CAP}-byte read cap" in error.reasons[1]


def test_vmdk_hostile_descriptor_parses_in_linear_time(tmp_path: Path) -> None:
    body = b"version=1\n" + b"\n" * 300_000 + b'parentFileNameHint="' * 30_000 + b"RW 1 " * 50_000
    path = fx.write(tmp_path / "d.vmdk", body[: diskformat.HEADER_CAP])
    started = time.monotonic()
    info = detect(path)
    assert time.monotonic() - started < 2.0
    assert info.format == "vmdk"


def _with_entry(image: bytes, offset: int, entry: int) -> bytes:
    data = bytearray(image)
    data[offset : offset + 8] = entry.to_bytes(8, "big")
    return bytes(data)


def test_qcow2_l1_entry_outside_the_file_is_refused(tmp_path: Path) -> None:
    """L1 at cluster 3 (the fixture's layout); its first entry names an L2 table far past EOF."""
    image = _with_entry(fx.qcow2(size=1 << 20), 3 * 65536, 1 << 40)
    info = detect(fx.write(tmp_path / "l1.qcow2", image))
    assert any("L1 table points" in p.message for p in info.problems)


def test_qcow2_l2_entry_outside_the_file_is_refused(tmp_path: Path) -> None:
    """A valid L2 table at cluster 4 whose first entry maps data past EOF."""
    image = bytearray(fx.qcow2(size=1 << 20, file_clusters=5))
    image[3 * 65536 : 3 * 65536 + 8] = (4 * 65536 | 1 << 63).to_bytes(8, "big")
    image = bytearray(_with_entry(bytes(image), 4 * 65536, (1 << 40) | 1 << 63))
    info = detect(fx.write(tmp_path / "l2.qcow2", bytes(image)))
    assert any("L2 table at offset" in p.message for p in info.problems)


def test_qcow2_refcount_entry_outside_the_file_is_refused(tmp_path: Path) -> None:
    image = _with_entry(fx.qcow2(size=1 << 20), 65536, 1 << 40)
    info = detect(fx.write(tmp_path / "rc.qcow2", image))
    assert any("refcount table points" in p.message for p in info.problems)


def test_qcow2_made_by_qemu_img_has_sane_tables(tmp_path: Path) -> None:
    if fx.QEMU_IMG is None:
        pytest.skip("qemu-img is not installed")
    path = tmp_path / "real.qcow2"
    fx.qemu_img("create", "-q", "-f", "qcow2", str(path), "16M")
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 1M", str(path)],
        check=True,
        capture_output=True,
    )
    assert detect(path).problems == ()
