"""The boot gate against a real libvirtd: the hook lets a verified domain start and refuses
an unverified one, with the reasons in libvirt's error.

The fixture starts virtlogd and libvirtd as plain child processes in a private
mount namespace (``unshare --mount``): a copy of /etc/libvirt with our hook is
bound over /etc/libvirt and libvirt's run/state/log directories are tmpfs there,
so the host's libvirt configuration and state are untouched (only libvirt's
own QEMU capabilities cache in /var/cache/libvirt is shared, which spares
re-probing qemu, ~40 s, on every run). virsh reaches the daemon through
``nsenter``. Needs root, the Debian packages libvirt-daemon,
libvirt-daemon-driver-qemu, libvirt-clients and qemu-system-x86, and the
libvirt-qemu user and kvm group (scripts/setup makes them).
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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefactory.gate.overlay import make_overlay
from tests.conftest import REPO, require_or_skip
from tests.fakes.imagedirs import key_sign, key_signer, make_image, new_key, vo_rules, write_policy

pytestmark = pytest.mark.integration

RAW = "atlas-wn-debian12-1.0.raw"
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
      <source file='{path}'/>
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

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", "-t", str(self.pid), "-m", "virsh", "-c", "qemu:///system", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    def create(self, name: str, disk: Path, fmt: str = "raw") -> subprocess.CompletedProcess[str]:
        readonly = "<readonly/>" if fmt == "raw" else ""
        xml = self.work / f"{name}.xml"
        xml.write_text(DOMAIN.format(name=name, fmt=fmt, path=disk, readonly=readonly))
        return self.virsh("create", str(xml))


@pytest.fixture(scope="module")
def libvirt() -> Iterator[Libvirt]:
    require_or_skip(os.geteuid() == 0, "libvirtd runs as root")
    for tool in TOOLS:
        require_or_skip(shutil.which(tool) is not None, f"{tool} is not installed")
    require_or_skip(
        _exists(user="libvirt-qemu", group="kvm") and _exists(group="libvirt-qemu"),
        "the libvirt-qemu user and group and the kvm group are missing (scripts/setup)",
    )
    # Not under pytest's 0700 tmp: qemu runs as libvirt-qemu and must reach the disks.
    work = Path(tempfile.mkdtemp(prefix="imagefactory-gate-", dir="/var/tmp"))
    work.chmod(0o755)
    store = work / "store"
    etc = work / "etc-libvirt"
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    (etc / "hooks").mkdir(exist_ok=True)
    key = new_key(work, "atlas")
    write_policy(work / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    key_sign(make_image(store, "good"), key)
    make_image(store, "unsigned")
    for path in [store, *store.iterdir()]:
        path.chmod(0o755)
    _install_hook(etc / "hooks" / "qemu", work, store)

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
        shutil.rmtree(work, ignore_errors=True)


def _install_hook(hook: Path, work: Path, store: Path) -> None:
    """The script ``gate-hook-script`` prints, pointed at the code under test."""
    argv = [sys.executable, "-m", "imagefactory", "gate-hook-script"]
    argv += ["--policy", str(work / "site.yaml"), "--store", str(store)]
    argv += ["--cache", str(work / "cache"), "--run-dir", str(work / "run")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    assert script.startswith("#!/bin/sh\n")
    # libvirtd gives hooks a clean environment; the code under test is not installed.
    script = script.replace("\nexec ", f"\nexport PYTHONPATH={REPO}\nexec ", 1)
    hook.write_text(script)
    hook.chmod(0o755)


def test_libvirt_starts_a_domain_whose_disk_is_verified(libvirt: Libvirt) -> None:
    done = libvirt.create("gate-good", libvirt.store / "good" / RAW)
    assert done.returncode == 0, done.stderr
    assert "gate-good" in libvirt.virsh("list", "--name").stdout
    libvirt.virsh("destroy", "gate-good")


def test_libvirt_refuses_a_domain_whose_disk_is_unsigned(libvirt: Libvirt) -> None:
    done = libvirt.create("gate-unsigned", libvirt.store / "unsigned" / RAW)
    assert done.returncode != 0
    assert "Hook script execution failed" in done.stderr
    assert "imagefactory gate: refusing domain gate-unsigned" in done.stderr
    assert "unsigned: the image directory carries no attestation" in done.stderr
    assert "gate-unsigned" not in libvirt.virsh("list", "--all", "--name").stdout


def test_libvirt_starts_an_overlay_over_a_verified_image(libvirt: Libvirt) -> None:
    overlay = make_overlay(libvirt.store / "good", libvirt.work / "run", "gate-overlay")
    done = libvirt.create("gate-overlay", overlay, fmt="qcow2")
    assert done.returncode == 0, done.stderr
    libvirt.virsh("destroy", "gate-overlay")


def test_libvirt_refuses_a_disk_outside_the_store(libvirt: Libvirt) -> None:
    outside = make_image(libvirt.work, "outside")
    outside.chmod(0o755)
    done = libvirt.create("gate-outside", outside / RAW)
    assert done.returncode != 0
    assert "gate-outside-store" in done.stderr


def _create_xml(libvirt: Libvirt, name: str, xml: str) -> subprocess.CompletedProcess[str]:
    path = libvirt.work / f"{name}.xml"
    path.write_text(xml)
    return libvirt.virsh("create", str(path))


def _good_domain(name: str, path: Path) -> str:
    return DOMAIN.format(name=name, fmt="raw", path=path, readonly="<readonly/>")


def test_libvirt_refuses_qemu_commandline_passthrough(libvirt: Libvirt, tmp_path: Path) -> None:
    """``<qemu:commandline>`` ran ``-incoming exec:`` in dom0; refused before qemu starts."""
    marker = tmp_path / "pwned"
    xml = _good_domain("gate-cmdline", libvirt.store / "good" / RAW)
    xml = xml.replace(
        "<domain type='qemu'>",
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
    ).replace(
        "</domain>",
        f"<qemu:commandline><qemu:arg value='-incoming'/><qemu:arg value='exec:touch {marker}'/>"
        "</qemu:commandline></domain>",
    )
    done = _create_xml(libvirt, "gate-cmdline", xml)
    assert done.returncode != 0
    assert "commandline" in done.stderr
    assert not marker.exists()


def test_libvirt_refuses_a_loader_from_a_path(libvirt: Libvirt) -> None:
    evil = libvirt.work / "evil.fd"
    evil.write_bytes(b"\0" * 65536)
    xml = _good_domain("gate-loader", libvirt.store / "good" / RAW).replace(
        "</os>", f"<loader readonly='yes' type='rom'>{evil}</loader></os>"
    )
    done = _create_xml(libvirt, "gate-loader", xml)
    assert done.returncode != 0
    assert "<os><loader>" in done.stderr


def test_libvirt_refuses_a_world_writable_store(libvirt: Libvirt) -> None:
    """libvirt opens the disk by path after the hook: a store others can write is refused."""
    image = libvirt.store / "good"
    image.chmod(0o777)
    try:
        done = libvirt.create("gate-writable", image / RAW)
    finally:
        image.chmod(0o755)
    assert done.returncode != 0
    assert "writable by group or others" in done.stderr


def test_libvirt_refuses_an_overlay_imagefactory_did_not_make(libvirt: Libvirt) -> None:
    overlay = libvirt.work / "foreign.qcow2"
    base = libvirt.store / "good" / RAW
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        check=True,
    )
    done = libvirt.create("gate-foreign", overlay, fmt="qcow2")
    assert done.returncode != 0
    assert "run directory" in done.stderr
