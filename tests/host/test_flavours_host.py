"""Which flavours this host can build: foreign architectures through binfmt_misc."""

from __future__ import annotations

from pathlib import Path

from imagefactory.host.tools import flavour_problems, flavours, foreign_arch_problem
from imagefactory.vocab import Arch, BootMode

ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"


def _binfmt(tmp_path: Path, text: str | None) -> Path:
    if text is not None:
        (tmp_path / "qemu-aarch64").write_text(text, encoding="ascii")
    return tmp_path


def test_native_architectures_need_no_emulation(tmp_path: Path) -> None:
    for arch in (Arch.X86_64, Arch.I386):
        assert foreign_arch_problem(arch, machine="x86_64", binfmt=tmp_path) is None
    assert foreign_arch_problem(Arch.AARCH64, machine="aarch64", binfmt=tmp_path) is None


def test_aarch64_on_x86_64_needs_a_registered_enabled_fixed_binary_entry(tmp_path: Path) -> None:
    def problem(text: str | None) -> str | None:
        return foreign_arch_problem(Arch.AARCH64, machine="x86_64", binfmt=_binfmt(tmp_path, text))

    assert "is not registered" in (problem(None) or "")
    assert "is disabled" in (problem(ENABLED.replace("enabled", "disabled")) or "")
    assert "lacks the F flag" in (problem(ENABLED.replace("POF", "PO")) or "")
    assert problem(ENABLED) is None
    assert "no emulation is known for x86_64" in (
        foreign_arch_problem(Arch.X86_64, machine="aarch64", binfmt=tmp_path) or ""
    )


def test_every_flavour_the_rules_accept_is_listed() -> None:
    names = [f.name for f in flavours()]
    assert "debian-13-x86_64-bios" in names
    assert "debian-12-x86_64-uefi" in names
    assert "debian-12-i386-bios" in names
    assert "ubuntu-22.04-aarch64-uefi" in names
    assert "debian-12-i386-uefi" not in names
    assert "debian-12-aarch64-bios" not in names
    assert not [n for n in names if n.startswith("ubuntu") and "i386" in n]


def test_flavour_problems_name_the_missing_package_and_firmware() -> None:
    uefi = next(f for f in flavours() if f.arch is Arch.X86_64 and f.boot is BootMode.UEFI)
    problems = flavour_problems(
        uefi, absent={"mcopy": "mtools"}, firmware=lambda arch: None, machine="x86_64"
    )
    assert problems == [
        "no UEFI firmware for x86_64 boot tests",
        "missing mcopy (Debian package mtools)",
    ]
    bios = next(f for f in flavours() if f.arch is Arch.X86_64 and f.boot is BootMode.BIOS)
    assert flavour_problems(bios, absent={"mcopy": "mtools"}, firmware=lambda a: None) == []
