"""verify's second opinion on disk formats (OpenStack's format inspector) must agree."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from imagefactory.diskinspect import second_opinion
from imagefactory.trust import load_policy
from imagefactory.verify import VerifyOptions, verify_image
from tests.fakes import diskimages as fx
from tests.fakes.imagedirs import (
    NOW,
    key_sign,
    key_signer,
    make_image,
    new_key,
    vo_rules,
    write_policy,
)


def _iso_pvd() -> bytes:
    """An ISO 9660 primary volume descriptor at 32 KiB (what the inspector looks for)."""
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    return bytes(pvd)


def qcow2_iso_polyglot() -> bytes:
    data = bytearray(fx.qcow2(size=1 << 20))
    # The qcow2 header and tables leave 32 KiB..34 KiB unused: the ISO's descriptor goes there.
    assert data[0x8000:0x8800] == bytes(0x800)
    data[0x8000:0x8800] = _iso_pvd()
    return bytes(data)


def mbr_without_partitions() -> bytes:
    sector = bytearray(512)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector) + b"\1" * 65024


def mbr_with_one_partition() -> bytes:
    sector = bytearray(512)
    # one Linux partition from sector 2048, 100 sectors
    sector[446:462] = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x83, b"\0\0\0", 2048, 100)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector).ljust(2048 * 512 + 100 * 512, b"\0")


def test_polyglot_qcow2_and_iso_is_refused(tmp_path: Path) -> None:
    disk = fx.write(tmp_path / "poly.qcow2", qcow2_iso_polyglot())
    problems = second_opinion(disk, "qcow2")
    assert problems, "the polyglot was accepted"
    assert "refuses it" in problems[0]


def test_raw_disk_with_an_empty_partition_table_is_refused(tmp_path: Path) -> None:
    disk = fx.write(tmp_path / "mbr.raw", mbr_without_partitions())
    assert "safety checks failed" in second_opinion(disk, "raw")[0]


def test_raw_disk_with_a_sane_partition_table_passes(tmp_path: Path) -> None:
    disk = fx.write(tmp_path / "mbr.raw", mbr_with_one_partition())
    assert second_opinion(disk, "raw") == []


def test_declared_raw_read_as_qcow2_is_refused(tmp_path: Path) -> None:
    disk = fx.write(tmp_path / "x.raw", fx.qcow2(size=1 << 20))
    assert "reads it as qcow2" in second_opinion(disk, "raw")[0]


def test_verify_denies_a_signed_polyglot(tmp_path: Path) -> None:
    """Signed and hashed correctly: the format step still refuses the polyglot."""
    key = new_key(tmp_path, "atlas")
    trust = load_policy(
        write_policy(tmp_path / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    )

    def as_qcow2(labels: dict[str, Any]) -> None:
        labels["disk"]["format"] = "qcow2"

    image = make_image(tmp_path, disk=qcow2_iso_polyglot(), edit=as_qcow2)
    key_sign(image, key)
    verdict = verify_image(image, trust, VerifyOptions(now=NOW))
    assert not verdict.allowed
    assert [r.detail for r in verdict.denials] == ["format-inspector"], verdict.render()
