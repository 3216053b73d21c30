"""boot-test picks the firmware from the disk's partition table when --boot-mode is not given.

The disks are real partition tables written by ``sfdisk`` on small files (and
``qemu-img convert`` for the qcow2 case); qemu itself is the seam: the test
records what ``boot_test`` was asked to boot.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagefactory import cli
from imagefactory.boot.qemu import BootResult
from imagefactory.diskprobe import boot_mode
from imagefactory.vocab import BootMode

pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk (fdisk)")

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def _disk(path: Path, script: str) -> Path:
    with path.open("wb") as stream:
        stream.truncate(64 << 20)
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    return path


def _gpt_esp(path: Path) -> Path:
    return _disk(path, f"label: gpt\nsize=16MiB, type={ESP}\ntype={LINUX}\n")


def test_gpt_with_an_esp_is_uefi(tmp_path: Path) -> None:
    assert boot_mode(_gpt_esp(tmp_path / "uefi.raw"), "raw") is BootMode.UEFI


def test_gpt_without_an_esp_and_mbr_are_bios(tmp_path: Path) -> None:
    gpt = _disk(tmp_path / "gpt.raw", f"label: gpt\ntype={LINUX}\n")
    mbr = _disk(tmp_path / "mbr.raw", "label: dos\ntype=83, bootable\n")
    assert boot_mode(gpt, "raw") is BootMode.BIOS
    assert boot_mode(mbr, "raw") is BootMode.BIOS


@pytest.mark.parametrize("compress", [[], ["-c"]], ids=["plain", "compressed"])
def test_a_qcow2_is_read_through_qemu_img(tmp_path: Path, compress: list[str]) -> None:
    """A compressed qcow2 (disk.compress) too: its partition table is in compressed clusters."""
    raw = _gpt_esp(tmp_path / "uefi.raw")
    qcow2 = tmp_path / "uefi.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", *compress, "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        check=True,
    )
    assert boot_mode(qcow2, "qcow2") is BootMode.UEFI


def _boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> dict[str, Any]:
    asked: dict[str, Any] = {}

    def fake_boot_test(image: Path, fmt: str, arch: Any, console: Path, **kw: Any) -> BootResult:
        asked.update(kw, image=image, format=fmt)
        return BootResult(True, 0.1, "tcg", console, kw.get("marker", ""), "login prompt")

    monkeypatch.setattr("imagefactory.boot.qemu.boot_test", fake_boot_test)
    console = tmp_path / "console.log"
    assert cli.main(["boot-test", *argv, "--console-log", str(console)]) == 0
    return asked


def test_boot_test_reads_the_mode_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    uefi = _gpt_esp(tmp_path / "uefi.raw")
    mbr = _disk(tmp_path / "mbr.raw", "label: dos\ntype=83, bootable\n")
    assert _boot(monkeypatch, tmp_path, str(uefi))["boot_mode"] is BootMode.UEFI
    assert _boot(monkeypatch, tmp_path, str(mbr))["boot_mode"] is BootMode.BIOS
    told = _boot(monkeypatch, tmp_path, str(uefi), "--boot-mode", "bios")
    assert told["boot_mode"] is BootMode.BIOS
