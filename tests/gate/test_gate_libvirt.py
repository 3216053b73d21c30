"""The boot gate against a real libvirtd (tests/libvirtd.py): the hook lets a verified
domain start and refuses an unverified one, with the reasons in libvirt's error.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.instances.make import make_overlay
from tests.fakes.imagedirs import key_sign, key_signer, make_image, new_key, vo_rules, write_policy
from tests.libvirtd import DOMAIN, Libvirt, libvirtd, require_libvirtd

pytestmark = pytest.mark.integration

RAW = "atlas-wn-debian12-1.0.raw"


@pytest.fixture(scope="module")
def libvirt() -> Iterator[Libvirt]:
    require_libvirtd()
    # Not under pytest's 0700 tmp: qemu runs as libvirt-qemu and must reach the disks.
    work = Path(tempfile.mkdtemp(prefix="imagefactory-gate-", dir="/var/tmp"))
    work.chmod(0o755)
    store = work / "store"
    key = new_key(work, "atlas")
    write_policy(work / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    key_sign(make_image(store, "good"), key)
    make_image(store, "unsigned")
    for path in [store, *store.iterdir()]:
        path.chmod(0o755)
    try:
        with libvirtd(work, store, work / "site.yaml", work / "run") as lv:
            yield lv
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    qemu_user = pwd.getpwnam("libvirt-qemu")
    overlay = make_overlay(
        libvirt.store / "good",
        libvirt.work / "run",
        "gate-overlay",
        owner=(qemu_user.pw_uid, qemu_user.pw_gid),
    )
    base = libvirt.store / "good" / RAW
    before = base.stat()
    done = libvirt.create("gate-overlay", overlay, fmt="qcow2")
    assert done.returncode == 0, done.stderr
    libvirt.virsh("destroy", "gate-overlay")
    # relabel='no': libvirt left the store's base as it was (root's, read-only).
    after = base.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )


def test_libvirt_refuses_a_disk_it_would_relabel(libvirt: Libvirt) -> None:
    xml = _good_domain("gate-relabel", libvirt.store / "good" / RAW).replace(
        "<seclabel model='dac' relabel='no'/>", ""
    )
    done = _create_xml(libvirt, "gate-relabel", xml)
    assert done.returncode != 0
    assert "gate-relabel" in done.stderr or "relabel='no'" in done.stderr
    assert "gate-relabel" not in libvirt.virsh("list", "--all", "--name").stdout


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
