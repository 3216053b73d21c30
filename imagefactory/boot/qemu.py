"""Boot an image under qemu and wait for a marker that proves userspace came up.

The image is opened with the format given (never auto-detected: a guest can
rewrite its own header) and with ``snapshot=on``, so a boot test never writes
to the image. There is no network. The serial console is saved as the log.
The default marker is the serial getty's ``login:`` prompt: systemd only
starts it once the system has reached its normal target.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from imagefactory.host.accel import HEADLESS_SERIAL, choose_accel
from imagefactory.run import run
from imagefactory.vocab import Arch

DEFAULT_MARKER = r"\blogin: "
DEFAULT_TIMEOUT = 900.0
DEFAULT_MEMORY_MIB = 1024


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
    image: Path, fmt: str, arch: Arch, accel: str, *, memory_mib: int = DEFAULT_MEMORY_MIB
) -> list[str]:
    """The qemu command line for a boot test (pure, asserted in tests)."""
    return [
        arch.qemu_system,
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
) -> BootResult:
    """Boot ``image`` and wait for ``marker`` on the serial console."""
    accel = choose_accel(accel_setting, arch.qemu_system, accel_cache)
    pattern = re.compile(marker)
    started = time.monotonic()
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with console_log.open("w", encoding="utf-8") as log:
        result = run(
            qemu_argv(image, fmt, arch, accel),
            logfile=log,
            until=lambda text: pattern.search(text) is not None,
            timeout=timeout,
            check=False,
        )
    seconds = time.monotonic() - started
    if result.stopped:
        reason = f"marker {marker!r} seen after {seconds:.0f}s"
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
