"""A real libvirtd with imagefactory's gate hook installed, for the gate and batch tests.

:func:`libvirtd` starts virtlogd and libvirtd as plain child processes in a
private mount namespace (``unshare --mount``): a copy of /etc/libvirt with our
hook is bound over /etc/libvirt and libvirt's run/state/log directories are
tmpfs there, so the host's libvirt configuration and state are untouched (only
libvirt's own QEMU capabilities cache in /var/cache/libvirt is shared, which
spares re-probing qemu, ~40 s, on every run). virsh reaches the daemon through
``nsenter``. Needs root, the Debian packages libvirt-daemon,
libvirt-daemon-driver-qemu, libvirt-clients and qemu-system-x86, and the
libvirt-qemu user and kvm group (scripts/setup makes them). Only one such
daemon runs on a host at a time (they share /run/libvirtd.pid).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, require_or_skip

TOOLS = ("libvirtd", "virtlogd", "virsh", "unshare", "nsenter", "qemu-system-x86_64", "qemu-img")
STATE_DIRS = ("/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt")

NAMESPACE_SCRIPT = """\
set -e
mount --bind "$1" /etc/libvirt
for d in {state}; do mkdir -p "$d"; mount -t tmpfs -o mode=0755 tmpfs "$d"; done
mkdir -p /var/cache/libvirt
# This host's /dev/kvm exists but hangs qemu (MACHINE.md): libvirt would re-probe
# qemu's capabilities, timing out, on every start. Hide it from this libvirtd only.
if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm; fi
virtlogd &
echo $! > "$2"
exec libvirtd
"""

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{path}'><seclabel model='dac' relabel='no'/></source>
      <target dev='vda' bus='virtio'/>
      {readonly}
    </disk>
  </devices>
</domain>
"""


def _exists(user: str | None = None, group: str | None = None) -> bool:
    try:
        if user:
            pwd.getpwnam(user)
        if group:
            grp.getgrnam(group)
    except KeyError:
        return False
    return True


@dataclass
class Libvirt:
    pid: int
    work: Path
    store: Path

    @property
    def virsh_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "virsh", "-c", "qemu:///system"]

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*self.virsh_argv, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    def create(self, name: str, disk: Path, fmt: str = "raw") -> subprocess.CompletedProcess[str]:
        readonly = "<readonly/>" if fmt == "raw" else ""
        xml = self.work / f"{name}.xml"
        xml.write_text(DOMAIN.format(name=name, fmt=fmt, path=disk, readonly=readonly))
        return self.virsh("create", str(xml))


def require_libvirtd() -> None:
    require_or_skip(os.geteuid() == 0, "libvirtd runs as root")
    for tool in TOOLS:
        require_or_skip(shutil.which(tool) is not None, f"{tool} is not installed")
    require_or_skip(
        _exists(user="libvirt-qemu", group="kvm") and _exists(group="libvirt-qemu"),
        "the libvirt-qemu user and group and the kvm group are missing (scripts/setup)",
    )


@contextlib.contextmanager
def libvirtd(work: Path, store: Path, policy: Path, run_dir: Path) -> Iterator[Libvirt]:
    """libvirtd whose qemu hook is the gate for ``store`` under ``policy`` and ``run_dir``.

    ``work`` must be reachable by the libvirt-qemu user (not under pytest's 0700
    tmp): qemu runs as that user and must reach the disks.
    """
    require_libvirtd()
    etc = work / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    (etc / "hooks").mkdir(exist_ok=True)
    install_hook(etc / "hooks" / "qemu", policy, store, work / "cache", run_dir)
    script = NAMESPACE_SCRIPT.format(state=" ".join(STATE_DIRS))
    log = (work / "libvirtd.log").open("wb")
    daemon = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(etc),
            str(work / "virtlogd.pid"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    lv = Libvirt(daemon.pid, work, store)
    try:
        deadline = time.monotonic() + 60
        while lv.virsh("version").returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail("libvirtd did not start: " + (work / "libvirtd.log").read_text())
            time.sleep(0.5)
        yield lv
    finally:
        names = lv.virsh("list", "--name").stdout.split() if daemon.poll() is None else []
        for name in names:
            lv.virsh("destroy", name)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        pidfile = work / "virtlogd.pid"
        if pidfile.exists():
            virtlogd = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(virtlogd, signal.SIGTERM)
        log.close()


def install_hook(hook: Path, policy: Path, store: Path, cache: Path, run_dir: Path) -> None:
    """The script ``gate-hook-script`` prints, pointed at the code under test."""
    argv = [sys.executable, "-m", "imagefactory", "gate-hook-script"]
    argv += ["--policy", str(policy), "--store", str(store)]
    argv += ["--cache", str(cache), "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert script.startswith("#!/bin/sh\n")
    # libvirtd gives hooks a clean environment; the code under test is not installed.
    script = script.replace("\nexec ", f"\nexport PYTHONPATH={REPO}\nexec ", 1)
    hook.write_text(script)
    hook.chmod(0o755)
