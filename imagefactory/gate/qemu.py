"""``imagefactory gate -- qemu-system-x86_64 ...``: verify a qemu command line's disks, then run it.

Disks are read from ``-drive file=...,format=...`` and ``-blockdev`` (key=value
or JSON; a ``file`` node and the format node naming it). Refused: options that
make qemu probe a disk's format (``-hda``..``-hdd``, ``-cdrom``, ``-fda``,
``-fdb``, ``-sd``, ``-mtdblock``, a ``-drive`` without ``format=``), non-file
sources (``json:``, ``nbd:``, URLs), ``-readconfig`` (drives defined in a file
not read here) and direct kernel boot (``-kernel``, ``-initrd``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from imagefactory.gate.disks import DiskRequest
from imagefactory.verify.verdict import Reason

STEP = "gate"

_PROBING = ("-hda", "-hdb", "-hdc", "-hdd", "-cdrom", "-fda", "-fdb", "-sd", "-mtdblock")
_FORMATS = ("raw", "qcow2", "qcow", "qed", "vmdk", "vhdx", "vpc", "vdi", "luks", "parallels")


def split_options(text: str) -> dict[str, str]:
    """qemu's ``key=value,key=value`` (``,,`` is a literal comma)."""
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    out: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        out[key] = value if sep else "on"
    return out


def _plain_path(path: str) -> bool:
    head = path.split("/", maxsplit=1)[0]
    return not (path.startswith("json:") or "://" in path or ":" in head)


def qemu_disks(argv: Sequence[str]) -> tuple[list[DiskRequest], list[Reason]]:
    """The disks ``argv`` (a qemu command, program first) would open, and what is refused."""
    disks: list[DiskRequest] = []
    refusals: list[Reason] = []
    files: dict[str, str] = {}
    formats: dict[str, str] = {}
    args = list(argv[1:])
    i = 0

    def refuse(code: str, message: str) -> None:
        refusals.append(Reason(code, STEP, message))

    while i < len(args):
        option = args[i]
        if option.startswith("--"):
            option = option[1:]
        value = args[i + 1] if i + 1 < len(args) else ""
        if option == "-drive":
            i += 2
            opts = split_options(value)
            path = opts.get("file")
            if path is None:
                continue
            where = f"-drive #{len(disks) + 1}"
            if not _plain_path(path):
                refuse("gate-unverifiable-disk", f"{where}: {path!r} is not a plain file path")
            else:
                disks.append(DiskRequest(path, opts.get("format"), where))
        elif option == "-blockdev":
            i += 2
            _blockdev(value, files, formats, refuse)
        elif option in _PROBING:
            i += 2
            refuse(
                "gate-format-mismatch",
                f"{option} {value!r}: qemu would probe the format; use -drive file=...,format=...",
            )
        elif option in ("-kernel", "-initrd"):
            i += 2
            refuse(
                "gate-direct-kernel",
                f"{option} {value!r}: direct kernel boot runs code no verified image vouches for",
            )
        elif option == "-readconfig":
            i += 2
            refuse("gate-invalid-request", f"-readconfig {value!r}: drives there are not checked")
        else:
            i += 1
    for node, path in files.items():
        where = f"-blockdev {node}"
        if not _plain_path(path):
            refuse("gate-unverifiable-disk", f"{where}: {path!r} is not a plain file path")
        else:
            disks.append(DiskRequest(path, formats.get(node), where))
    return disks, refusals


def _blockdev(
    value: str,
    files: dict[str, str],
    formats: dict[str, str],
    refuse: Callable[[str, str], None],
) -> None:
    if value.startswith("{"):
        try:
            spec: Any = json.loads(value)
        except json.JSONDecodeError as exc:
            refuse("gate-invalid-request", f"-blockdev JSON does not parse: {exc}")
            return
        if not isinstance(spec, dict):
            refuse("gate-invalid-request", "-blockdev JSON is not an object")
            return
    else:
        spec = split_options(value)
    driver = spec.get("driver")
    node = str(spec.get("node-name", f"#{len(files) + len(formats) + 1}"))
    if driver in ("file", "host_device"):
        files[node] = str(spec.get("filename", ""))
    elif driver in _FORMATS:
        child = spec.get("file")
        if isinstance(child, str):
            formats[child] = driver
        else:
            refuse(
                "gate-invalid-request",
                f"-blockdev {node}: a {driver} node with an inline file is not supported;"
                " name a file node",
            )
    else:
        refuse("gate-unverifiable-disk", f"-blockdev {node}: driver {driver!r} is not a local file")
