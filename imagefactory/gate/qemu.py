"""``imagefactory gate -- qemu-system-x86_64 ...``: a qemu command line, read as qemu reads it.

The argv is read with qemu's own option table (:mod:`.qemuopts`): positional
disks, unknown options and every option outside the allowlist are refused by
name. The allowed options' arguments are read with :mod:`.keyval` (no dotted
keys, no ``,,``-ambiguity, no JSON) and allowlisted key by key:

* ``-drive``: only ``file`` (an absolute path), ``format`` (required with a
  file), ``if`` (virtio, ide, scsi, none), ``media``, ``readonly`` and a few
  caching/error keys, ``snapshot``. ``driver=``, ``file.*``, ``backing.*``,
  ``if=pflash``/``mtd``/``sd``/``floppy`` are refused. The gate, not qemu,
  opens each file (:mod:`.bind`) and qemu gets it as ``/dev/fdset/N``.
* ``-machine`` and ``-accel``: no ``kernel``/``initrd``/``firmware``/``dtb``/
  ``pflash`` or memory backends; the accelerator kvm or tcg.
* ``-device``: disk controllers and disks, two NICs (given ``romfile=`` empty,
  so they carry no network-boot ROM), the RNG and the balloon; ``loader``,
  passthrough and everything else refused.
* ``-netdev user`` without ``tftp``/``bootfile``/``smb``/``guestfwd``; ``-boot``
  from disks and CD-ROMs only (no ``n``..``p``, no ``splash`` file); serial to
  ``none``, ``null``, ``stdio`` or ``pty`` only; no monitor of any kind (a
  monitor adds disks by path after the check).

The gate adds ``-nodefaults`` (no default monitor, NIC or drives) and
``-no-user-config`` (no drives from ``/etc/qemu``) in front of what it passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from imagefactory.gate.disks import DiskRequest
from imagefactory.gate.keyval import KeyvalError, parse_keyval
from imagefactory.gate.qemuopts import ALLOWED, HAS_ARG, NO_ARG, REFUSED_WHY
from imagefactory.gate.text import shown
from imagefactory.verify.verdict import Reason

STEP = "gate"
#: What the gate puts in front of every qemu command it passes.
PREFIX = ("-nodefaults", "-no-user-config")

_ON_OFF = frozenset({"on", "off"})
_DIGITS = re.compile(r"[0-9]{1,6}\Z")
_SIZE = re.compile(r"[0-9]{1,12}[KMGTkmgt]?\Z")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")


class ArgRefused(Exception):
    """An allowed option's argument is refused; the message says what and why."""


@dataclass
class Drive:
    """One ``-drive``: its keys; the gate replaces ``file`` with a descriptor."""

    options: dict[str, str]
    where: str

    @property
    def path(self) -> str | None:
        return self.options.get("file")

    @property
    def readonly(self) -> bool:
        return self.options.get("readonly") == "on" or self.options.get("media") == "cdrom"

    def request(self) -> DiskRequest:
        return DiskRequest(self.options["file"], self.options.get("format"), self.where)

    def argument(self, file: str | None, extra: Mapping[str, str] = {}) -> str:
        """The ``-drive`` argument with ``file`` replaced (``None``: kept) plus ``extra``."""
        options = dict(self.options)
        if file is not None:
            options["file"] = file
        options.update(extra)
        return ",".join(f"{k}={v.replace(',', ',,')}" for k, v in options.items())


@dataclass
class QemuCommand:
    """A qemu command line as the gate read it."""

    program: str
    #: The arguments to pass, a :class:`Drive` where a ``-drive`` argument goes.
    args: list[str | Drive] = field(default_factory=list)
    refusals: list[Reason] = field(default_factory=list)

    @property
    def drives(self) -> list[Drive]:
        return [a for a in self.args if isinstance(a, Drive)]


def _keys(
    value: str, implied: str | None, allowed: Mapping[str, Callable[[str], bool] | None]
) -> dict[str, str]:
    """``value`` parsed; every key must be in ``allowed`` and pass its value check."""
    try:
        options = parse_keyval(value, implied)
    except KeyvalError as exc:
        raise ArgRefused(str(exc)) from exc
    for key, val in options.items():
        if key not in allowed:
            raise ArgRefused(f"{key}= is not in the gate's allowlist for this option")
        check = allowed[key]
        if check is not None and not check(val):
            raise ArgRefused(f"{key}={shown(val)} is not an accepted value")
    return options


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda v: v in values


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda v: bool(pattern.match(v))


def _accels(value: str) -> bool:
    return all(a in ("kvm", "tcg") for a in value.split(":"))


def _boot_drives(value: str) -> bool:
    # a, b: floppies; c: first disk; d: first CD-ROM. n..p would boot from the network.
    return bool(re.fullmatch(r"[a-d]{1,4}", value))


_MACHINE: dict[str, Callable[[str], bool] | None] = {
    "type": _matches(_NAME),
    "accel": _accels,
    "usb": _one_of("on", "off"),
    "dump-guest-core": _one_of("on", "off"),
    "mem-merge": _one_of("on", "off"),
    "vmport": _one_of("on", "off", "auto"),
    "smm": _one_of("on", "off", "auto"),
    "kernel_irqchip": _one_of("on", "off", "split"),
    "kernel-irqchip": _one_of("on", "off", "split"),
    "hpet": _one_of("on", "off"),
    "acpi": _one_of("on", "off", "auto"),
}
_DRIVE: dict[str, Callable[[str], bool] | None] = {
    "file": lambda v: v.startswith("/"),
    "format": _matches(re.compile(r"[a-z0-9]{1,16}\Z")),
    "if": _one_of("virtio", "ide", "scsi", "none"),
    "index": _matches(_DIGITS),
    "bus": _matches(_DIGITS),
    "unit": _matches(_DIGITS),
    "media": _one_of("disk", "cdrom"),
    "readonly": _one_of("on", "off"),
    "id": _matches(_NAME),
    "cache": _one_of("none", "writeback", "writethrough", "directsync", "unsafe"),
    "aio": _one_of("threads", "native", "io_uring"),
    "discard": _one_of("ignore", "off", "unmap", "on"),
    "detect-zeroes": _one_of("on", "off", "unmap"),
    "werror": _one_of("ignore", "stop", "report", "enospc"),
    "rerror": _one_of("ignore", "stop", "report"),
    # A temporary overlay qemu makes on top of the already open node (never
    # reopened by name); the base is opened read-only: the non-persistent model.
    "snapshot": _one_of("on", "off"),
}
_DEV_COMMON: dict[str, Callable[[str], bool] | None] = {
    "driver": None,
    "id": _matches(_NAME),
    "bus": _matches(_NAME),
    "addr": _matches(_NAME),
}
_DISK_DEV = {
    **_DEV_COMMON,
    "drive": _matches(_NAME),
    "bootindex": _matches(_DIGITS),
    "serial": _matches(_NAME),
}
_NIC = {**_DEV_COMMON, "netdev": _matches(_NAME), "mac": _matches(_NAME)}
#: Devices allowed, with their allowed properties.
DEVICES: dict[str, dict[str, Callable[[str], bool] | None]] = {
    "virtio-blk-pci": _DISK_DEV,
    "virtio-scsi-pci": _DEV_COMMON,
    "scsi-hd": {**_DISK_DEV, "lun": _matches(_DIGITS), "scsi-id": _matches(_DIGITS)},
    "scsi-cd": {**_DISK_DEV, "lun": _matches(_DIGITS), "scsi-id": _matches(_DIGITS)},
    "ide-hd": {**_DISK_DEV, "unit": _matches(_DIGITS)},
    "ide-cd": {**_DISK_DEV, "unit": _matches(_DIGITS)},
    "virtio-net-pci": _NIC,
    "e1000": _NIC,
    "virtio-rng-pci": _DEV_COMMON,
    "virtio-balloon-pci": _DEV_COMMON,
}
#: Devices that would carry a network-boot ROM unless told ``romfile=`` (none).
NICS = frozenset({"virtio-net-pci", "e1000"})
_NETDEV: dict[str, Callable[[str], bool] | None] = {
    "type": _one_of("user"),
    "id": _matches(_NAME),
    "net": None,
    "host": None,
    "ipv4": _one_of("on", "off"),
    "ipv6": _one_of("on", "off"),
    "restrict": _one_of("on", "off"),
    "hostname": _matches(_NAME),
    "dns": None,
    "dhcpstart": None,
    "hostfwd": _matches(re.compile(r"(tcp|udp):[0-9.]*:[0-9]{1,5}-[0-9.]*:[0-9]{1,5}\Z")),
}


def _check_plain(option: str, value: str) -> str:
    """The argument of an option whose argument is one value, not key=value."""
    plain: dict[str, Callable[[str], bool]] = {
        "cpu": _matches(re.compile(r"[A-Za-z0-9_.-]{1,64}(,[A-Za-z0-9_.=+-]{1,64}){0,64}\Z")),
        "uuid": _matches(_UUID),
        "vga": _one_of("std", "virtio", "cirrus", "none"),
        "serial": _one_of("none", "null", "stdio", "pty"),
        "k": _matches(re.compile(r"[a-z]{2}(-[a-z]{2})?\Z")),
        "runas": _matches(re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")),
        "nic": _one_of("none"),
    }
    if "help" in value or not plain[option](value):
        raise ArgRefused(f"{shown(value)} is not an accepted value")
    return value


def _check_arg(option: str, value: str, where: str) -> str | Drive:
    """The checked argument of an allowed option; raises :class:`ArgRefused`."""
    if option in ("machine", "M"):
        _keys(value, "type", _MACHINE)
    elif option == "accel":
        _keys(value, "accel", {"accel": _accels, "thread": _one_of("single", "multi")})
    elif option == "smp":
        _keys(
            value,
            "cpus",
            dict.fromkeys(
                ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus"),
                _matches(_DIGITS),
            ),
        )
    elif option == "m":
        _keys(
            value,
            "size",
            dict.fromkeys(("size", "maxmem"), _matches(_SIZE)) | {"slots": _matches(_DIGITS)},
        )
    elif option == "name":
        _keys(
            value, "guest", {"guest": None, "process": None, "debug-threads": _one_of("on", "off")}
        )
    elif option == "display":
        _keys(value, "type", {"type": _one_of("none")})
    elif option == "boot":
        _keys(
            value,
            "order",
            {
                "order": _boot_drives,
                "once": _boot_drives,
                "menu": _one_of("on", "off"),
                "strict": _one_of("on", "off"),
                "reboot-timeout": None,
                "splash-time": None,
            },
        )
    elif option == "rtc":
        _keys(
            value,
            None,
            {
                "base": _matches(re.compile(r"[A-Za-z0-9:T.-]{1,32}\Z")),
                "clock": _one_of("host", "rt", "vm"),
                "driftfix": _one_of("none", "slew"),
            },
        )
    elif option == "sandbox":
        _keys(
            value,
            "enable",
            {
                "enable": _one_of("on", "off"),
                **dict.fromkeys(
                    ("obsolete", "elevateprivileges", "spawn", "resourcecontrol"),
                    _one_of("allow", "deny"),
                ),
            },
        )
    elif option == "overcommit":
        _keys(value, None, {"mem-lock": _one_of("on", "off"), "cpu-pm": _one_of("on", "off")})
    elif option == "netdev":
        _keys(value, "type", _NETDEV)
    elif option == "device":
        return _check_device(value)
    elif option == "drive":
        return _check_drive(value, where)
    else:
        return _check_plain(option, value)
    return value


def _check_device(value: str) -> str:
    try:
        driver = parse_keyval(value, "driver").get("driver", "")
    except KeyvalError as exc:
        raise ArgRefused(str(exc)) from exc
    if driver not in DEVICES:
        raise ArgRefused(f"device {shown(driver)} is not in the gate's allowlist")
    _keys(value, "driver", DEVICES[driver])
    # No option ROM on a NIC: it would boot from the network when the disk does not.
    return value + ",romfile=" if driver in NICS else value


def _check_drive(value: str, where: str) -> Drive:
    options = _keys(value, None, _DRIVE)
    if "file" in options and "format" not in options:
        raise ArgRefused("no format=: qemu would probe the file's format (name it)")
    return Drive(options, where)


def parse_qemu(argv: Sequence[str]) -> QemuCommand:
    """Read ``argv`` (program first) exactly as qemu's ``lookup_opt`` would."""
    command = QemuCommand(argv[0] if argv else "")

    def refuse(code: str, message: str) -> None:
        command.refusals.append(Reason(code, STEP, message))

    args = list(argv[1:])
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if not word.startswith("-"):
            refuse(
                "gate-format-mismatch",
                f"{shown(word)}: a positional disk (qemu probes its"
                " format and opens it by path); use -drive",
            )
            continue
        name = word[2:] if word.startswith("--") else word[1:]
        if name not in NO_ARG and name not in HAS_ARG:
            refuse(
                "gate-unknown-option",
                f"{shown(word)}: not an option the gate knows; nothing after it was read",
            )
            return command
        value = None
        if name in HAS_ARG:
            if i >= len(args):
                refuse("gate-invalid-request", f"{shown(word)} needs an argument")
                return command
            value = args[i]
            i += 1
        shown_opt = f"-{name}" + (f" {shown(value)}" if value is not None else "")
        if name not in ALLOWED:
            code = (
                "gate-direct-kernel"
                if name in ("kernel", "initrd", "append", "dtb")
                else (
                    "gate-format-mismatch"
                    if "probed" in REFUSED_WHY.get(name, "")
                    else "gate-refused-option"
                )
            )
            why = REFUSED_WHY.get(name, "not in the gate's allowlist")
            refuse(code, f"{shown_opt}: {why}")
            continue
        command.args.append(f"-{name}")
        if value is None:
            continue
        where = f"-drive #{len(command.drives) + 1}"
        try:
            command.args.append(_check_arg(name, value, where))
        except ArgRefused as exc:
            refuse("gate-refused-option", f"{shown_opt}: {exc}")
    return command


def qemu_disks(argv: Sequence[str]) -> tuple[list[DiskRequest], list[Reason]]:
    """The disks ``argv`` would open, and what is refused (for checks without binding)."""
    command = parse_qemu(argv)
    disks = [d.request() for d in command.drives if d.path is not None]
    return disks, command.refusals
