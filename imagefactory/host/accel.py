"""Choose qemu's accelerator: KVM where it really works, TCG otherwise.

``/dev/kvm`` existing (even a tiny real-mode guest running) is not enough: on
some hosts (nested virtualisation, containers) a Linux guest under KVM hangs
or qemu aborts. So KVM is *probed* with what it will have to run: the host's
own kernel is booted directly (no disk, no initrd) with ``-accel kvm`` until
it reaches the point where it looks for a root file system. A kernel that gets
there has gone through long mode, interrupts, timers and MSR set-up.

The verdict is cached per host boot (``/proc/sys/kernel/random/boot_id``) and
qemu binary, because a hanging probe costs its whole timeout.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path

from imagefactory.errors import CommandError, MissingToolError
from imagefactory.fsutil import atomic_write
from imagefactory.run import run

log = logging.getLogger(__name__)

#: qemu options every headless run shares: no default devices, no display, no
#: reboot loop (a crash ends qemu), the first serial port on stdout.
HEADLESS_SERIAL = ("-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio")

#: Printed by every Linux kernel once it looks for the root file system.
PROBE_MARKER = re.compile(r"VFS: |Kernel panic")
PROBE_TIMEOUT = 20.0
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def kvm_device_usable(path: Path = Path("/dev/kvm")) -> bool:
    return path.exists() and os.access(path, os.R_OK | os.W_OK)


def host_kernel(boot: Path = Path("/boot")) -> Path | None:
    """A readable kernel image of the host, for the probe."""
    kernels = sorted(p for p in boot.glob("vmlinuz-*") if os.access(p, os.R_OK))
    return kernels[-1] if kernels else None


def probe_kvm(qemu: str, kernel: Path, stop: threading.Event | None = None) -> bool:
    """Boot ``kernel`` under KVM; true if it gets to mounting root in time.

    Setting ``stop`` stops the probe's qemu (then: false, and no verdict).
    """
    try:
        result = run(
            [
                qemu,
                "-accel",
                "kvm",
                "-m",
                "256",
                *HEADLESS_SERIAL,
                "-kernel",
                str(kernel),
                "-append",
                "console=ttyS0 panic=-1 loglevel=4",
            ],
            until=lambda text: PROBE_MARKER.search(text) is not None,
            timeout=PROBE_TIMEOUT,
            check=False,
            stop=stop,
        )
    except (CommandError, MissingToolError):
        return False
    return result.stopped


def _cache_key(qemu: str) -> str | None:
    path = shutil.which(qemu)
    if path is None:
        return None
    try:
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        return None
    st = os.stat(path)
    return f"{boot_id}:{path}:{st.st_size}:{st.st_mtime_ns}"


_probes: dict[tuple[str, Path | None], Future[bool]] = {}
_probes_lock = threading.Lock()
#: Set when the interpreter exits: a background probe's qemu is stopped and reaped
#: rather than left behind (a probe on a host where KVM hangs never ends by itself;
#: its timeout lives in the probe's thread, which dies with the process).
_exiting = threading.Event()
_probe_threads: list[threading.Thread] = []
#: How long the exit waits for the probes to stop their qemu.
EXIT_WAIT = 5.0


@atexit.register
def _stop_background_probes() -> None:
    _exiting.set()
    for thread in _probe_threads:
        thread.join(EXIT_WAIT)


def kvm_works(qemu: str, cache_file: Path | None = None) -> bool:
    """True when a Linux guest really runs under KVM on this host.

    A probe already running for the same qemu and cache (started by
    :func:`probe_in_background`) is waited for, not started again.
    """
    with _probes_lock:
        pending = _probes.get((qemu, cache_file))
    if pending is not None:
        return pending.result()
    return _kvm_works(qemu, cache_file)


def probe_in_background(setting: str, qemu: str, cache_file: Path) -> None:
    """Start deciding the accelerator now, so a later :func:`choose_accel` does not wait.

    A probe on a host where KVM hangs costs its whole timeout; the build starts
    it before diskimage-builder, which takes far longer, so it is free there.
    Nothing starts when the setting or the cached verdict already decides.
    """
    if setting != "auto" or not kvm_device_usable():
        return
    with _probes_lock:
        if (qemu, cache_file) in _probes:
            return
        future: Future[bool] = Future()
        _probes[(qemu, cache_file)] = future

    def probe() -> None:
        try:
            future.set_result(_kvm_works(qemu, cache_file, _exiting))
        except BaseException as exc:  # handed to the waiter, which raises it
            future.set_exception(exc)

    thread = threading.Thread(target=probe, name="kvm-probe", daemon=True)
    _probe_threads.append(thread)
    thread.start()


def _kvm_works(qemu: str, cache_file: Path | None, stop: threading.Event | None = None) -> bool:
    if not kvm_device_usable():
        return False
    key = _cache_key(qemu)
    cached: dict[str, bool] = {}
    if cache_file is not None and key is not None:
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cached = {}
        if isinstance(cached.get(key), bool):
            return cached[key]
    kernel = host_kernel()
    if kernel is None:
        log.warning("no readable host kernel in /boot to probe KVM with; using TCG")
        return False
    works = probe_kvm(qemu, kernel, stop)
    if stop is not None and stop.is_set():
        return False  # stopped (the process is exiting): no verdict to keep
    if not works:
        log.warning("KVM is present but a guest does not run under it here; using TCG")
    if cache_file is not None and key is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, json.dumps({key: works}), durable=False)
        except OSError as exc:  # a cache that cannot be written only costs a probe later
            log.warning("cannot cache the KVM verdict in %s: %s", cache_file, exc)
    return works


def choose_accel(setting: str, qemu: str, cache_file: Path | None = None) -> str:
    """``kvm`` or ``tcg`` for a setting of ``auto``, ``kvm`` or ``tcg``."""
    if setting in ("kvm", "tcg"):
        return setting
    return "kvm" if kvm_works(qemu, cache_file) else "tcg"


def choose_guest_accel(setting: str, cache_file: Path) -> str:
    """``kvm`` or ``tcg`` for the libguestfs appliance, decided as for the boot test.

    ``setting`` is the host setting (``auto``, ``kvm`` or ``tcg``); the probe's
    verdict is cached in ``cache_file``, since a hanging probe costs its timeout.
    """
    if setting in ("kvm", "tcg"):
        return setting
    return "kvm" if kvm_works("qemu-system-x86_64", cache_file) else "tcg"
