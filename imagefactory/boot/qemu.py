"""Boot an image under qemu and wait for a marker that proves userspace came up.

The image is opened with the format given (never auto-detected: a guest can
rewrite its own header) and with ``snapshot=on``, so a boot test never writes
to the image. There is no network. The serial console is saved as the log.
The default marker is the serial getty's ``login:`` prompt: systemd only
starts it once the system has reached its normal target.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from imagefactory.errors import HostError, MissingToolError
from imagefactory.host.accel import HEADLESS_SERIAL, choose_accel
from imagefactory.run import run
from imagefactory.vocab import Arch, BootMode

DEFAULT_MARKER = r"\blogin: "
DEFAULT_TIMEOUT = 900.0
DEFAULT_MEMORY_MIB = 1024


@dataclass(frozen=True)
class Firmware:
    """A UEFI firmware: its code (read-only) and the variable store it starts from."""

    code: Path
    vars: Path
    package: str

    def present(self) -> bool:
        return self.code.is_file() and self.vars.is_file()


#: UEFI firmware per architecture, from the Debian packages that ship it.
UEFI_FIRMWARE = {
    Arch.X86_64: Firmware(
        Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), "ovmf"
    ),
    Arch.AARCH64: Firmware(
        Path("/usr/share/AAVMF/AAVMF_CODE.fd"),
        Path("/usr/share/AAVMF/AAVMF_VARS.fd"),
        "qemu-efi-aarch64",
    ),
}


def uefi_firmware(arch: Arch) -> Firmware:
    """The UEFI firmware that boots ``arch``; an error names the package when it is absent."""
    firmware = UEFI_FIRMWARE.get(arch)
    if firmware is None:
        raise HostError(
            f"no UEFI firmware for {arch} images", hint="boot them with --boot-mode bios"
        )
    if not firmware.present():
        raise MissingToolError({str(firmware.code): firmware.package})
    return firmware


def firmware_argv(firmware: Firmware) -> list[str]:
    """Two pflash drives; the variable store is opened with snapshot=on, never written."""
    return [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={_qemu_escape(str(firmware.code))}",
        "-drive",
        f"if=pflash,format=raw,unit=1,snapshot=on,file={_qemu_escape(str(firmware.vars))}",
    ]


@dataclass(frozen=True)
class BootResult:
    """What a boot test observed."""

    passed: bool
    seconds: float
    accel: str
    console_log: Path
    marker: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "seconds": round(self.seconds, 1),
            "accel": self.accel,
            "console_log": str(self.console_log),
            "marker": self.marker,
            "reason": self.reason,
        }


def _qemu_escape(value: str) -> str:
    return value.replace(",", ",,")


def qemu_argv(
    image: Path,
    fmt: str,
    arch: Arch,
    accel: str,
    *,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    firmware: Firmware | None = None,
) -> list[str]:
    """The qemu command line for a boot test (pure, asserted in tests).

    ``firmware`` boots UEFI; without it the machine's default (SeaBIOS on x86).
    """
    machine = ["-machine", "virt", "-cpu", "max"] if arch is Arch.AARCH64 else []
    return [
        arch.qemu_system,
        *machine,
        "-accel",
        accel,
        "-m",
        str(memory_mib),
        "-smp",
        "2",
        *HEADLESS_SERIAL,
        "-drive",
        # qemu option values escape "," by doubling it; a path must not add options.
        f"file={_qemu_escape(str(image))},format={fmt},if=virtio,snapshot=on",
        "-nic",
        "none",
        *(firmware_argv(firmware) if firmware is not None else []),
    ]


def boot_test(
    image: Path,
    fmt: str,
    arch: Arch,
    console_log: Path,
    *,
    accel_setting: str = "auto",
    accel_cache: Path | None = None,
    marker: str = DEFAULT_MARKER,
    timeout: float = DEFAULT_TIMEOUT,
    boot_mode: BootMode = BootMode.BIOS,
    stop: threading.Event | None = None,
) -> BootResult:
    """Boot ``image`` with ``boot_mode``'s firmware; wait for ``marker`` on the serial console.

    Setting ``stop`` (from another thread) stops qemu; the result then fails
    with the reason "stopped".
    """
    firmware = uefi_firmware(arch) if boot_mode is BootMode.UEFI else None
    accel = choose_accel(accel_setting, arch.qemu_system, accel_cache)
    pattern = re.compile(marker)
    started = time.monotonic()
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with console_log.open("w", encoding="utf-8") as log:
        result = run(
            qemu_argv(image, fmt, arch, accel, firmware=firmware),
            logfile=log,
            until=lambda text: pattern.search(text) is not None,
            timeout=timeout,
            check=False,
            stop=stop,
        )
    seconds = time.monotonic() - started
    if result.stopped:
        reason = f"marker {marker!r} seen after {seconds:.0f}s"
    elif result.cancelled:
        reason = f"stopped after {seconds:.0f}s, before the marker appeared"
    elif result.timed_out:
        reason = f"no marker {marker!r} within {timeout:.0f}s"
    else:
        reason = f"qemu exited with status {result.returncode} before the marker appeared"
    return BootResult(
        passed=result.stopped,
        seconds=seconds,
        accel=accel,
        console_log=console_log,
        marker=marker,
        reason=reason,
    )
