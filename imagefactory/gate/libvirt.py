"""The libvirt hook: verify a domain's disks before libvirt starts it.

libvirtd runs ``/etc/libvirt/hooks/qemu NAME OPERATION SUBOPERATION EXTRA`` with
the domain XML on stdin, as root; at ``prepare begin`` a non-zero exit refuses
the start and libvirt shows the hook's stderr in its error. Every other
operation is let through untouched.

Every element and attribute must be in the gate's allowlist
(:mod:`.domainxml`: no loader, kernel, network boot, passthrough or
``qemu:commandline``). Refused outright besides: network, volume, directory and
other non-file/block disk sources (they cannot be mapped to a signed image), an
XML document with a DTD (entity expansion), and anything unparsable.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Sequence

from imagefactory.gate.check import GateConfig, GateResult, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.gate.domainxml import domain_problems
from imagefactory.gate.text import shown
from imagefactory.verify.verdict import Reason

#: Largest domain XML read from stdin.
MAX_XML_BYTES = 16 * 1024 * 1024

STEP = "gate"


def domain_disks(
    xml_text: str, hypervisors: Collection[str] = (), firmware: Collection[str] = ()
) -> tuple[list[DiskRequest], list[Reason]]:
    """The disks a domain would open, and what in it is refused outright.

    Every element and attribute must be in :data:`.domainxml.SCHEMA`;
    ``hypervisors`` and ``firmware`` are what ``<emulator>`` and ``<os><loader>``
    may name (the settings' lists).
    """
    if "<!DOCTYPE" in xml_text or "<!ENTITY" in xml_text:
        return [], [Reason("gate-invalid-request", STEP, "domain XML with a DTD is refused")]
    try:
        root = ET.fromstring(xml_text)  # noqa: S314 -- from libvirtd, DTDs refused above
    except ET.ParseError as exc:
        return [], [Reason("gate-invalid-request", STEP, f"domain XML does not parse: {exc}")]
    if root.tag != "domain":
        return [], [Reason("gate-invalid-request", STEP, f"not a domain XML (<{root.tag}>)")]
    refusals = [
        Reason(p.code, STEP, p.message) for p in domain_problems(root, hypervisors, firmware)
    ]
    disks: list[DiskRequest] = []
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        where = target.get("dev", "?") if target is not None else "?"
        kind = disk.get("type", "file")
        path = None
        if source is not None:
            path = source.get("file") if kind == "file" else source.get("dev")
        if kind not in ("file", "block") or (source is not None and path is None):
            refusals.append(
                Reason(
                    "gate-unverifiable-disk",
                    STEP,
                    f"disk {shown(where)}: type {shown(kind)} cannot be mapped to a signed image",
                )
            )
            continue
        if path is None:  # an empty cdrom or floppy drive
            continue
        driver = disk.find("driver")
        fmt = driver.get("type") if driver is not None else None
        disks.append(DiskRequest(path, fmt, f"disk {where}"))
    return disks, refusals


def run_hook(
    argv: Sequence[str], stdin: bytes, load_config: Callable[[], GateConfig]
) -> tuple[int, str]:
    """The hook's exit code and stderr text for ``argv`` (NAME OP SUBOP EXTRA) and stdin.

    The configuration (policy, store, cache) is loaded only for a ``prepare``;
    its errors propagate (the CLI turns them into exit 2, which refuses too).
    """
    if len(argv) < 2 or argv[1] != "prepare" or (len(argv) > 2 and argv[2] != "begin"):
        return 0, ""
    name = argv[0]
    if len(stdin) > MAX_XML_BYTES:
        return 1, f"imagefactory gate: refusing domain {name}: domain XML larger than allowed\n"
    try:
        text = stdin.decode("utf-8")
    except UnicodeDecodeError:
        return 1, f"imagefactory gate: refusing domain {name}: domain XML is not UTF-8\n"
    config = load_config()
    disks, refusals = domain_disks(text, config.hypervisors, config.firmware)
    result: GateResult = check_disks(disks, config, refusals)
    if result.allowed:
        return 0, ""
    return 1, result.render(f"domain {name}") + "\n"
