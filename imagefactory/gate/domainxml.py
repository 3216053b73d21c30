"""The libvirt domain XML the gate accepts: every element and attribute known, or refused.

libvirt's domain schema (``src/conf/schemas/domaincommon.rng``) is large; the
gate accepts the small part a batch worker node needs and that libvirtd itself
adds to a live definition, element path by element path (:data:`SCHEMA`),
attribute by attribute. Anything else is refused by its path, so a new
element cannot slip by unread: ``<os><loader>`` and ``<nvram>`` (firmware from
a path; only the site's packaged firmware in ``gate.firmware`` is allowed),
``<kernel>``/``<initrd>``/``<cmdline>``/``<dtb>``, network boot
(``<boot dev='network'>``, a ``<boot>`` on an interface, an interface without
``<rom enabled='no'/>``), ``<hostdev>`` and every other passthrough,
``<filesystem>``, ``<qemu:commandline>`` and any other namespace, a
``<backingStore>`` given in the XML (only the empty one, "no backing", is
accepted: libvirt would open what it names), file-backed serials, an
``<emulator>`` that is not a hypervisor the settings name.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from imagefactory.gate.text import shown

Check = Callable[[str], bool] | None


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda v: v in values


def _re(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern + r"\Z")
    return lambda v: bool(compiled.match(v))


_ANY: Check = None
_NAME = _re(r"[A-Za-z0-9_.:+-]{1,128}")  # no "/": a name is never a path
_NUM = _re(r"[0-9]{1,12}")
_YES_NO = _one_of("yes", "no")
_ON_OFF = _one_of("on", "off")
_ADDRESS = dict.fromkeys(
    ("type", "domain", "bus", "slot", "function", "multifunction", "controller", "target",
     "unit", "port", "reg", "cssid", "ssid", "devno", "iobase", "irq"),
    _NAME,
)  # fmt: skip


@dataclass(frozen=True)
class Element:
    """An accepted element: its attributes (name -> value check) and whether it has text."""

    attrs: Mapping[str, Check]
    text: Check | bool = False


def _e(text: Check | bool = False, **attrs: Check) -> Element:
    return Element({k.rstrip("_").replace("__", "-"): v for k, v in attrs.items()}, text)


#: Longest domain name accepted: room for a batch system's prefix (contrib's
#: ``wn-``) before the longest job ID instantiate takes (64 characters).
DOMAIN_NAME_MAX = 80
_DISK = "domain/devices/disk"
_IFACE = "domain/devices/interface"
#: Accepted element paths (root first) and what each may carry.
SCHEMA: dict[str, Element] = {
    "domain": _e(type=_one_of("qemu", "kvm", "xen"), id=_NUM),
    "domain/name": _e(text=_re(rf"[A-Za-z0-9_.+-]{{1,{DOMAIN_NAME_MAX}}}")),
    "domain/uuid": _e(text=_re(r"[0-9a-fA-F-]{32,36}")),
    "domain/title": _e(text=True),
    "domain/description": _e(text=True),
    "domain/memory": _e(text=_NUM, unit=_NAME),
    "domain/currentMemory": _e(text=_NUM, unit=_NAME),
    "domain/vcpu": _e(text=_NUM, placement=_one_of("static", "auto"), current=_NUM),
    "domain/resource": _e(),
    "domain/resource/partition": _e(text=_re(r"/machine(/[A-Za-z0-9_.-]{1,64}){0,4}")),
    "domain/os": _e(firmware=_one_of("bios", "efi")),
    "domain/os/type": _e(text=_one_of("hvm", "xen", "xenpv", "xenpvh"), arch=_NAME, machine=_NAME),
    "domain/os/boot": _e(dev=_one_of("hd", "cdrom", "fd")),
    "domain/os/bootmenu": _e(enable=_YES_NO, timeout=_NUM),
    "domain/os/smbios": _e(mode=_one_of("emulate", "host", "sysinfo")),
    "domain/os/bios": _e(useserial=_YES_NO, rebootTimeout=_NUM),
    # Checked against the settings' firmware list in domain_refusals().
    "domain/os/loader": _e(
        text=True, readonly=_YES_NO, type=_one_of("rom", "pflash"), secure=_YES_NO
    ),
    "domain/features": _e(),
    "domain/features/acpi": _e(),
    "domain/features/apic": _e(),
    "domain/features/pae": _e(),
    "domain/features/vmport": _e(state=_ON_OFF),
    "domain/cpu": _e(mode=_NAME, match=_NAME, check=_NAME, migratable=_ON_OFF),
    "domain/cpu/model": _e(text=_NAME, fallback=_NAME),
    "domain/cpu/topology": _e(sockets=_NUM, dies=_NUM, cores=_NUM, threads=_NUM, clusters=_NUM),
    "domain/cpu/feature": _e(policy=_NAME, name=_NAME),
    "domain/clock": _e(offset=_NAME),
    "domain/clock/timer": _e(name=_NAME, tickpolicy=_NAME, present=_YES_NO),
    "domain/on_poweroff": _e(text=_NAME),
    "domain/on_reboot": _e(text=_NAME),
    "domain/on_crash": _e(text=_NAME),
    "domain/pm": _e(),
    "domain/pm/suspend-to-mem": _e(enabled=_YES_NO),
    "domain/pm/suspend-to-disk": _e(enabled=_YES_NO),
    "domain/seclabel": _e(type=_one_of("dynamic"), model=_NAME, relabel=_YES_NO),
    "domain/seclabel/label": _e(text=_NAME),
    "domain/seclabel/imagelabel": _e(text=_NAME),
    "domain/devices": _e(),
    # Checked against the settings' hypervisors in domain_refusals().
    "domain/devices/emulator": _e(text=True),
    _DISK: _e(type=_one_of("file", "block"), device=_one_of("disk", "cdrom")),
    f"{_DISK}/driver": _e(
        name=_one_of("qemu"),
        type=_NAME,
        cache=_NAME,
        io=_NAME,
        discard=_NAME,
        detect_zeroes=_NAME,
    ),
    f"{_DISK}/source": _e(file=_ANY, dev=_ANY, index=_NUM),
    # Only "do not relabel": libvirt then leaves the disk and its backing chain (the
    # store's base) as they are, instead of chowning them to its qemu user for good.
    f"{_DISK}/source/seclabel": _e(model=_one_of("dac"), relabel=_one_of("no")),
    f"{_DISK}/target": _e(dev=_NAME, bus=_one_of("virtio", "scsi", "sata", "ide", "xen")),
    f"{_DISK}/readonly": _e(),
    f"{_DISK}/serial": _e(text=_NAME),
    f"{_DISK}/boot": _e(order=_NUM),
    f"{_DISK}/address": _e(**_ADDRESS),
    f"{_DISK}/alias": _e(name=_NAME),
    # Only the empty one ("no backing file"); checked in domain_refusals().
    f"{_DISK}/backingStore": _e(),
    "domain/devices/controller": _e(type=_NAME, index=_NUM, model=_NAME, ports=_NUM),
    "domain/devices/controller/address": _e(**_ADDRESS),
    "domain/devices/controller/alias": _e(name=_NAME),
    "domain/devices/controller/model": _e(name=_NAME),
    "domain/devices/controller/target": _e(chassisNr=_NUM, chassis=_NUM, port=_NAME),
    _IFACE: _e(type=_one_of("network", "bridge", "user")),
    f"{_IFACE}/source": _e(network=_NAME, bridge=_NAME, portid=_NAME),
    f"{_IFACE}/mac": _e(address=_re(r"[0-9a-fA-F:]{17}")),
    f"{_IFACE}/model": _e(type=_one_of("virtio", "e1000", "rtl8139")),
    f"{_IFACE}/target": _e(dev=_NAME),
    f"{_IFACE}/address": _e(**_ADDRESS),
    f"{_IFACE}/alias": _e(name=_NAME),
    f"{_IFACE}/rom": _e(enabled=_one_of("no")),
    "domain/devices/serial": _e(type=_one_of("pty", "null")),
    "domain/devices/serial/target": _e(type=_NAME, port=_NUM),
    "domain/devices/serial/target/model": _e(name=_NAME),
    "domain/devices/serial/alias": _e(name=_NAME),
    "domain/devices/serial/source": _e(path=_re(r"/dev/pts/[0-9]{1,6}")),
    "domain/devices/console": _e(type=_one_of("pty", "null"), tty=_re(r"/dev/pts/[0-9]{1,6}")),
    "domain/devices/console/target": _e(type=_NAME, port=_NUM),
    "domain/devices/console/alias": _e(name=_NAME),
    "domain/devices/console/source": _e(path=_re(r"/dev/pts/[0-9]{1,6}")),
    "domain/devices/input": _e(type=_NAME, bus=_NAME),
    "domain/devices/input/alias": _e(name=_NAME),
    "domain/devices/input/address": _e(**_ADDRESS),
    "domain/devices/audio": _e(id=_NUM, type=_one_of("none")),
    "domain/devices/video": _e(),
    "domain/devices/video/model": _e(type=_NAME, vram=_NUM, heads=_NUM, primary=_YES_NO),
    "domain/devices/video/alias": _e(name=_NAME),
    "domain/devices/video/address": _e(**_ADDRESS),
    "domain/devices/memballoon": _e(model=_NAME),
    "domain/devices/memballoon/alias": _e(name=_NAME),
    "domain/devices/memballoon/address": _e(**_ADDRESS),
    "domain/devices/rng": _e(model=_one_of("virtio")),
    "domain/devices/rng/backend": _e(
        text=_one_of("/dev/urandom", "/dev/random"), model=_one_of("random")
    ),
    "domain/devices/rng/alias": _e(name=_NAME),
    "domain/devices/rng/address": _e(**_ADDRESS),
}

_WHY = {
    "domain/os/kernel": "direct kernel boot: code no verified image vouches for",
    "domain/os/initrd": "direct kernel boot: code no verified image vouches for",
    "domain/os/cmdline": "direct kernel boot: code no verified image vouches for",
    "domain/os/dtb": "direct kernel boot: code no verified image vouches for",
    "domain/os/nvram": "firmware variables from a path",
    "domain/devices/hostdev": "device passthrough",
    "domain/devices/filesystem": "exports a host directory",
    f"{_IFACE}/boot": "network boot",
    "domain/devices/disk/backingStore/source": "a backing file given in the XML",
    "domain/devices/disk/backingStore/format": "a backing file given in the XML",
}


def _path_name(path: str) -> str:
    return "".join(f"<{p}>" for p in path.split("/"))


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


def _walk(element: ET.Element, path: str, out: list[Problem]) -> None:
    tag = element.tag
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        out.append(
            Problem(
                "gate-refused-option",
                f"{_path_name(path)}<{shown(local)}> (namespace {shown(namespace)}):"
                " elements of other namespaces (qemu:commandline, ...) are refused",
            )
        )
        return
    here = f"{path}/{tag}" if path else tag
    spec = SCHEMA.get(here)
    if spec is None:
        why = _WHY.get(here, "not in the gate's allowlist")
        code = "gate-direct-kernel" if "kernel" in why else "gate-refused-option"
        out.append(Problem(code, f"{_path_name(here)}: {why}"))
        return
    for name, value in element.attrib.items():
        if name not in spec.attrs:
            out.append(
                Problem("gate-refused-option", f"{_path_name(here)} {shown(name)}=: not allowed")
            )
            continue
        check = spec.attrs[name]
        if check is not None and not check(value):
            out.append(
                Problem(
                    "gate-refused-option",
                    f"{_path_name(here)} {name}={shown(value)}: not an accepted value",
                )
            )
    text = (element.text or "").strip()
    if text and spec.text is False:
        out.append(Problem("gate-refused-option", f"{_path_name(here)}: text is not allowed"))
    elif text and callable(spec.text) and not spec.text(text):
        out.append(
            Problem("gate-refused-option", f"{_path_name(here)}: {shown(text)} is not accepted")
        )
    for child in element:
        _walk(child, here, out)


def domain_problems(
    root: ET.Element, hypervisors: Collection[str], firmware: Collection[str]
) -> list[Problem]:
    """Everything in the domain ``root`` outside the allowlist, by element path."""
    out: list[Problem] = []
    _walk(root, "", out)
    for emulator in root.findall("./devices/emulator"):
        if (emulator.text or "").strip() not in hypervisors:
            out.append(
                Problem(
                    "gate-refused-option",
                    f"<emulator> {shown(emulator.text or '')}: not a hypervisor the settings name",
                )
            )
    for loader in root.findall("./os/loader"):
        if (loader.text or "").strip() not in firmware:
            out.append(
                Problem(
                    "gate-refused-option",
                    f"<os><loader> {shown(loader.text or '')}: firmware only from the host's"
                    " packaged paths in the settings (gate.firmware)",
                )
            )
    for store in root.findall("./devices/disk/backingStore"):
        if len(store) or store.attrib:
            out.append(
                Problem("gate-overlay", "<disk><backingStore>: a backing file given in the XML")
            )
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        if source is None or not (source.get("file") or source.get("dev")):
            continue
        label = source.find("seclabel")
        if label is None or label.get("model") != "dac" or label.get("relabel") != "no":
            target = disk.find("target")
            dev = target.get("dev", "?") if target is not None else "?"
            out.append(
                Problem(
                    "gate-relabel",
                    f"<disk> {shown(dev)}: its <source> lacks <seclabel model='dac'"
                    " relabel='no'/>; libvirt would chown the disk and its backing chain (the"
                    " store's image) to its qemu user for good (make the overlay that user's:"
                    " imagefactory instantiate --owner libvirt-qemu)",
                )
            )
    for iface in root.findall("./devices/interface"):
        rom = iface.find("rom")
        if rom is None or rom.get("enabled") != "no":
            out.append(
                Problem(
                    "gate-refused-option",
                    "<interface> without <rom enabled='no'/>: its ROM would boot from the network",
                )
            )
    return out
