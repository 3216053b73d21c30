"""The libvirt domain XML allowlist: each bypass class of issue 10 refused by its element path."""

from __future__ import annotations

import pytest

from imagefactory.gate.domainxml import DOMAIN_NAME_MAX
from imagefactory.gate.libvirt import domain_disks, run_hook
from imagefactory.instances.rundir import MAX_JOB
from tests.gate.conftest import Store

EMULATOR = "/usr/bin/qemu-system-x86_64"
OVMF = "/usr/share/OVMF/OVMF_CODE_4M.fd"
#: What every disk the gate accepts carries: libvirt must not chown store images.
NO_RELABEL = "<seclabel model='dac' relabel='no'/>"
DOMAIN = """<domain type='qemu' {ns}><name>wn</name><memory unit='KiB'>65536</memory>
<os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>
<devices><emulator>{emulator}</emulator>
<disk type='file' device='disk'><driver name='qemu' type='raw'/>
<source file='{disk}'>{seclabel}</source><target dev='vda' bus='virtio'/><readonly/>{disk_extra}\
</disk>
{devices}</devices>{tail}</domain>"""


def xml(
    *,
    os: str = "",
    devices: str = "",
    disk_extra: str = "",
    tail: str = "",
    ns: str = "",
    emulator: str = EMULATOR,
    disk: str = "/s/good/a.raw",
    seclabel: str = NO_RELABEL,
) -> str:
    return DOMAIN.format(
        os=os, devices=devices, disk_extra=disk_extra, tail=tail, ns=ns, emulator=emulator,
        disk=disk, seclabel=seclabel,
    )  # fmt: skip


def problems(text: str) -> list[str]:
    return [r.message for r in domain_disks(text, [EMULATOR], [OVMF])[1]]


def test_plain_domain_is_accepted() -> None:
    assert problems(xml()) == []


def test_the_batch_scripts_domain_name_fits_the_longest_job_id() -> None:
    """contrib's prologues name the domain wn-JOB; instantiate takes 64-character job IDs."""
    longest = "wn-" + "7" * MAX_JOB
    assert problems(xml().replace("<name>wn</name>", f"<name>{longest}</name>")) == []
    too_long = "w" * (DOMAIN_NAME_MAX + 1)
    assert problems(xml().replace("<name>wn</name>", f"<name>{too_long}</name>"))


def test_libvirt_live_defaults_are_accepted() -> None:
    """What libvirtd adds to a live definition before the hook runs."""
    live = xml(
        devices="<controller type='usb' index='0' model='piix3-uhci'><alias name='usb'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>"
        "</controller><controller type='pci' index='0' model='pci-root'/>"
        "<input type='mouse' bus='ps2'/><audio id='1' type='none'/>"
        "<memballoon model='virtio'><alias name='balloon0'/></memballoon>",
        tail="<seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+994</label>"
        "<imagelabel>+64055:+994</imagelabel></seclabel>",
    )
    assert problems(live) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"os": "<loader readonly='yes' type='pflash'>/tmp/evil.fd</loader>"}, "<os><loader>"),
        ({"os": "<nvram>/tmp/vars.fd</nvram>"}, "<nvram>"),
        ({"os": "<kernel>/tmp/vmlinuz</kernel>"}, "<kernel>"),
        ({"os": "<initrd>/tmp/initrd</initrd>"}, "<initrd>"),
        ({"os": "<cmdline>init=/bin/sh</cmdline>"}, "<cmdline>"),
        ({"os": "<boot dev='network'/>"}, "dev='network'"),
        (
            {
                "devices": "<interface type='user'><model type='virtio'/><boot order='1'/>"
                "<rom enabled='no'/></interface>"
            },
            "<interface><boot>",
        ),
        (
            {"devices": "<interface type='user'><model type='virtio'/></interface>"},
            "rom enabled='no'",
        ),
        (
            {"devices": "<interface type='user'><rom file='/tmp/evil.rom'/></interface>"},
            "file",
        ),
        (
            {
                "devices": "<hostdev mode='subsystem' type='pci'><source><address domain='0'"
                " bus='1' slot='0' function='0'/></source></hostdev>"
            },
            "<hostdev>",
        ),
        (
            {
                "ns": "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'",
                "tail": "<qemu:commandline><qemu:arg value='-incoming'/>"
                "<qemu:arg value='exec:touch /tmp/pwned'/></qemu:commandline>",
            },
            "commandline",
        ),
        (
            {
                "disk_extra": "<backingStore type='file'><format type='raw'/>"
                "<source file='/tmp/evil.raw'/></backingStore>"
            },
            "backingStore",
        ),
        ({"devices": "<filesystem type='mount'><source dir='/'/></filesystem>"}, "<filesystem>"),
        ({"devices": "<serial type='file'><source path='/etc/passwd'/></serial>"}, "serial"),
        ({"devices": "<graphics type='vnc' port='-1'/>"}, "<graphics>"),
        ({"emulator": "/tmp/evil-qemu"}, "<emulator>"),
        ({"tail": "<seclabel type='none'/>"}, "seclabel"),
    ],
)
def test_domain_bypass_is_refused_by_name(kwargs: dict[str, str], needle: str) -> None:
    found = problems(xml(**kwargs))
    assert found, "accepted"
    assert any(needle in message for message in found), found


def test_loader_from_the_settings_firmware_list_is_accepted() -> None:
    assert problems(xml(os=f"<loader readonly='yes' type='pflash'>{OVMF}</loader>")) == []


def test_empty_backing_store_is_accepted() -> None:
    """libvirt's own way to say "this disk has no backing file"."""
    assert problems(xml(disk_extra="<backingStore/>")) == []


def test_hook_refuses_a_domain_in_a_world_writable_store(images: Store) -> None:
    images.root.chmod(0o777)
    text = xml(disk=str(images.good)).encode()
    code, message = run_hook(["wn", "prepare", "begin", "-"], text, lambda: images.config)
    assert code == 1
    assert "writable by group or others" in message


def test_escapes_in_domain_xml_are_shown_escaped() -> None:
    found = problems(
        xml(devices="<disk type='network' device='disk'><target dev='\x1b[2J'/></disk>")
    )
    assert found
    assert all("\x1b" not in m for m in found)


def _with_disk_seclabel(seclabel: str) -> str:
    return xml(seclabel=seclabel)


def test_a_disk_that_libvirt_must_not_relabel_is_accepted() -> None:
    """contrib/libvirt/worker-node.xml: the store's base stays root's."""
    assert problems(_with_disk_seclabel("<seclabel model='dac' relabel='no'/>")) == []


@pytest.mark.parametrize("seclabel", ["", "<seclabel model='dac' relabel='yes'/>"])
def test_a_disk_libvirt_may_relabel_is_refused_with_the_fix(seclabel: str) -> None:
    """libvirt's DAC driver would chown the store's base to its qemu user, for good."""
    found = problems(_with_disk_seclabel(seclabel))
    assert any("relabel='no'" in m and "instantiate --owner" in m for m in found), found


@pytest.mark.parametrize(
    "seclabel",
    [
        "<seclabel model='dac' relabel='yes'><label>+0:+0</label></seclabel>",
        "<seclabel model='selinux' relabel='no'/>",
        "<seclabel model='dac' relabel='no'><label>+0:+0</label></seclabel>",
    ],
)
def test_any_other_disk_seclabel_is_refused(seclabel: str) -> None:
    assert problems(_with_disk_seclabel(seclabel)), "accepted"
