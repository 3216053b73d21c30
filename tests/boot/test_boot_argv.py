"""The boot test's qemu command line and accelerator choice (no qemu runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagefactory.boot import qemu
from imagefactory.errors import HostError, MissingToolError
from imagefactory.host import accel
from imagefactory.vocab import Arch


def test_exact_qemu_argv_uses_the_given_format_snapshot_and_no_network() -> None:
    argv = qemu.qemu_argv(Path("/img/wn.qcow2"), "qcow2", Arch.X86_64, "tcg")
    assert argv == [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-drive",
        "file=/img/wn.qcow2,format=qcow2,if=virtio,snapshot=on",
        "-nic",
        "none",
    ]


def test_a_comma_in_the_path_cannot_add_drive_options() -> None:
    argv = qemu.qemu_argv(Path("/img/a,backing=x.qcow2"), "raw", Arch.I386, "tcg")
    drive = argv[argv.index("-drive") + 1]
    assert drive == "file=/img/a,,backing=x.qcow2,format=raw,if=virtio,snapshot=on"
    assert argv[0] == "qemu-system-x86_64"  # it boots i386 guests too


@pytest.mark.parametrize("setting", ["kvm", "tcg"])
def test_explicit_accelerator_setting_is_not_probed(
    setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_probe(*args: object) -> bool:
        raise AssertionError("probed")

    monkeypatch.setattr(accel, "kvm_works", no_probe)
    assert accel.choose_accel(setting, "qemu-system-x86_64") == setting


def test_auto_without_kvm_device_is_tcg_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: False)
    monkeypatch.setattr(accel, "probe_kvm", lambda q, k, stop=None: pytest.fail("probed"))
    assert accel.choose_accel("auto", "qemu-system-x86_64") == "tcg"


def test_probe_verdict_is_cached_per_boot_and_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_probe(qemu_bin: str, kernel: Path, stop: object = None) -> bool:
        calls.append(qemu_bin)
        return False

    monkeypatch.setattr(accel, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(accel, "host_kernel", lambda: tmp_path / "vmlinuz")
    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    monkeypatch.setattr(accel, "_cache_key", lambda q: f"boot-1:{q}")
    cache = tmp_path / "accel.json"
    assert accel.choose_accel("auto", "qemu-system-x86_64", cache) == "tcg"
    assert accel.choose_accel("auto", "qemu-system-x86_64", cache) == "tcg"
    assert calls == ["qemu-system-x86_64"]
    assert json.loads(cache.read_text()) == {"boot-1:qemu-system-x86_64": False}
    # Another host boot (or qemu binary) probes again.
    monkeypatch.setattr(accel, "_cache_key", lambda q: f"boot-2:{q}")
    accel.choose_accel("auto", "qemu-system-x86_64", cache)
    assert len(calls) == 2


def test_uefi_boot_adds_read_only_firmware_and_a_snapshot_variable_store() -> None:
    firmware = qemu.Firmware(Path("/fw/CODE.fd"), Path("/fw/VARS,x.fd"), "ovmf")
    argv = qemu.qemu_argv(Path("/img/wn.qcow2"), "qcow2", Arch.X86_64, "tcg", firmware=firmware)
    assert argv[-4:] == [
        "-drive",
        "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
        "-drive",
        "if=pflash,format=raw,unit=1,snapshot=on,file=/fw/VARS,,x.fd",
    ]


def test_missing_uefi_firmware_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = qemu.Firmware(tmp_path / "CODE.fd", tmp_path / "VARS.fd", "ovmf")
    monkeypatch.setitem(qemu.UEFI_FIRMWARE, Arch.X86_64, absent)
    with pytest.raises(MissingToolError) as err:
        qemu.uefi_firmware(Arch.X86_64)
    assert "apt-get install ovmf" in (err.value.hint or "")
    with pytest.raises(HostError, match="no UEFI firmware for i386"):
        qemu.uefi_firmware(Arch.I386)
