"""``imagefactory gate -- xl create ...``: an xl domain configuration, read as xl reads it.

The command line is read with xl's getopt rules: ``create`` with its flags and
``-f FILE``/``-fFILE`` or one positional file (``-f=FILE`` names the file
``=FILE``, as getopt would). ``--defconfig`` and extra ``KEY=VALUE`` arguments
(xl parses them as more configuration lines) are refused. The file is read
once (a regular file, size-capped, never a FIFO) with libxlu's grammar
(:mod:`.xlcfg`) and every setting must be in :data:`SETTINGS`; the gate then
hands xl the very bytes it checked (a sealed memfd, :func:`sealed_config`).

Disks: only the unambiguous ``key=value`` disk specification
(xl-disk-configuration(5)) with an explicit ``format=`` and allowlisted keys;
block ``script=``s (a program run in dom0) are refused. Boot code no verified
disk vouches for is refused by name: ``kernel``, ``ramdisk``, ``bootloader``
(pygrub parses the guest's disk in dom0), ``device_model_*``, ``firmware``,
``pci`` passthrough, network boot (``boot`` with ``n``).
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imagefactory.gate.disks import DiskRequest
from imagefactory.gate.text import shown
from imagefactory.gate.xlcfg import Value, XlConfigError, parse_xl_config
from imagefactory.verify.verdict import Reason

STEP = "gate"
MAX_CONFIG_BYTES = 1 << 20
#: ``xl create`` flags without a value (xl's getopt string for create: "Fcf:nqpeVA" etc).
_FLAGS = frozenset("Fcnqpe")


def _num(value: Value) -> bool:
    return isinstance(value, int)


def _str(pattern: str) -> Callable[[Value], bool]:
    compiled = re.compile(pattern + r"\Z")
    return lambda v: isinstance(v, str) and bool(compiled.match(v))


def _strings(value: Value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_ACTION = _str(r"destroy|restart|preserve|rename-restart|coredump-destroy|coredump-restart")
#: Settings accepted, with their value checks (disk and vif entries are read further).
SETTINGS: dict[str, Callable[[Value], bool]] = {
    "name": _str(r"[A-Za-z0-9_.-]{1,64}"),
    "uuid": _str(r"[0-9a-fA-F-]{32,36}"),
    "type": _str(r"hvm|pvh"),
    "builder": _str(r"hvm"),
    "memory": _num,
    "maxmem": _num,
    "vcpus": _num,
    "maxvcpus": _num,
    "cpus": _str(r"[0-9,^-]{1,64}|all"),
    "disk": _strings,
    "vif": _strings,
    # c: disk, d: CD-ROM; n would boot from the network.
    "boot": _str(r"[cd]{1,2}"),
    "on_poweroff": _ACTION,
    "on_reboot": _ACTION,
    "on_crash": _ACTION,
    "on_watchdog": _ACTION,
    "serial": lambda v: v in ("pty", ["pty"]),
    "vnc": _num,
    "sdl": _num,
    "acpi": _num,
    "apic": _num,
    "pae": _num,
    "hap": _num,
    "localtime": _num,
    "stdvga": _num,
    "videoram": _num,
}
_WHY = {
    **dict.fromkeys(
        ("kernel", "ramdisk", "bootloader", "bootloader_args", "cmdline", "root", "extra"),
        "boots code no verified image vouches for",
    ),
    **dict.fromkeys(
        (
            "device_model_override",
            "device_model_args",
            "device_model_args_hvm",
            "device_model_args_pv",
            "device_model_user",
            "device_model_version",
        ),
        "a device model or its arguments the gate does not see",
    ),
    **dict.fromkeys(
        (
            "firmware",
            "firmware_override",
            "bios_path_override",
            "acpi_firmware",
            "smbios_firmware",
            "seabios",
            "ovmf",
        ),
        "firmware from a path",
    ),
    "pci": "device passthrough",
    "dtdev": "device passthrough",
    "usbdevice": "device passthrough",
    "p9": "exports a host directory",
}
#: Keys of a ``vif=`` entry accepted (no ``script=``: it runs in dom0).
_VIF_KEYS = frozenset({"mac", "bridge", "model", "type", "vifname"})
#: Keys of a disk specification accepted (xl-disk-configuration(5)).
_DISK_KEYS = frozenset(
    {"format", "vdev", "access", "devtype", "backendtype", "discard", "no-discard"}
)


def parse_disk_spec(spec: str) -> tuple[str | None, str | None, str | None]:
    """(target, format, problem) of one ``key=value`` disk specification."""
    target = None
    head = spec
    if "target=" in spec:
        # target= takes the rest of the string, commas included (xl's rule).
        head, _, target = spec.partition("target=")
    fields = [f.strip() for f in head.split(",") if f.strip()]
    options: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            return None, None, f"positional item {shown(item)}: write key=value (format=, target=)"
        key = key.strip()
        if key == "script":
            return None, None, f"script={shown(value.strip())} runs a program in dom0"
        if key not in _DISK_KEYS:
            return None, None, f"{shown(key)}=: not in the gate's allowlist"
        options[key] = value.strip()
    if options.get("devtype") == "cdrom" and not target:
        return None, None, None  # an empty CD drive opens nothing
    if target is None:
        return None, None, "no target= (the disk's path)"
    return target.strip(), options.get("format"), None


@dataclass
class XlCommand:
    """An ``xl create`` command as the gate read it."""

    program: str
    flags: list[str] = field(default_factory=list)
    config_path: str | None = None
    #: The configuration's bytes as read (once) by the gate.
    config: bytes | None = None
    disks: list[DiskRequest] = field(default_factory=list)
    refusals: list[Reason] = field(default_factory=list)

    def refuse(self, code: str, message: str) -> None:
        self.refusals.append(Reason(code, STEP, message))


def _read_args(args: list[str], command: XlCommand) -> None:
    """``create``'s options, getopt's way: ``-f FILE``, ``-fFILE``, bundled flags."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            command.refuse("gate-refused-option", f"xl create {shown(arg)}: not accepted")
            continue
        if arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            for n, letter in enumerate(letters):
                if letter == "f":
                    value = letters[n + 1 :]  # -fFILE; -f=FILE names "=FILE", as getopt does
                    if not value:
                        value = args[i] if i < len(args) else ""
                        i += 1
                    _set_config(command, value)
                    break
                if letter not in _FLAGS:
                    command.refuse("gate-refused-option", f"xl create -{letter}: not accepted")
                    break
                command.flags.append(f"-{letter}")
            continue
        if "=" in arg:
            command.refuse(
                "gate-refused-option",
                f"xl create {shown(arg)}: KEY=VALUE arguments are more configuration lines;"
                " put them in the file",
            )
            continue
        _set_config(command, arg)


def _set_config(command: XlCommand, path: str) -> None:
    if command.config_path is not None or not path:
        command.refuse("gate-invalid-request", "xl create needs exactly one configuration file")
    command.config_path = path


def _read_config(path: str, command: XlCommand) -> bytes | None:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        command.refuse("gate-invalid-request", f"{shown(path)}: cannot open: {exc.strerror}")
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            command.refuse("gate-invalid-request", f"{shown(path)}: not a regular file")
            return None
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        command.refuse("gate-invalid-request", f"{shown(path)}: larger than {MAX_CONFIG_BYTES}")
        return None
    return data


def _check_settings(path: str, settings: dict[str, Value], command: XlCommand) -> None:
    for key, value in settings.items():
        if key not in SETTINGS:
            why = _WHY.get(key, "not in the gate's allowlist")
            code = "gate-direct-kernel" if "boots code" in why else "gate-refused-option"
            command.refuse(code, f"{shown(path)}: {key}=: {why}")
        elif not SETTINGS[key](value):
            command.refuse("gate-refused-option", f"{shown(path)}: {key}=: value not accepted")
    disks = settings.get("disk", [])
    specs = [d for d in disks if isinstance(d, str)] if isinstance(disks, list) else []
    for n, spec in enumerate(specs):
        target, fmt, problem = parse_disk_spec(spec)
        if problem is not None:
            command.refuse("gate-unverifiable-disk", f"disk #{n + 1}: {problem}")
        elif target is not None:
            command.disks.append(DiskRequest(target, fmt, f"disk #{n + 1}"))
    vifs = settings.get("vif", [])
    for n, vif in enumerate(vifs if isinstance(vifs, list) else []):
        keys = {item.partition("=")[0].strip() for item in str(vif).split(",") if item.strip()}
        if not keys <= _VIF_KEYS:
            extra = ", ".join(sorted(keys - _VIF_KEYS))
            command.refuse("gate-refused-option", f"vif #{n + 1}: {shown(extra)}: not accepted")


def parse_xl(argv: Sequence[str]) -> XlCommand:
    """Read ``xl create [options] CONFIG`` and its configuration file (once)."""
    command = XlCommand(argv[0] if argv else "xl")
    args = list(argv[1:])
    if not args or args[0] != "create":
        command.refuse(
            "gate-invalid-request", "only 'xl create' starts a domain the gate can check"
        )
        return command
    _read_args(args[1:], command)
    if command.config_path is None:
        command.refuse("gate-invalid-request", "xl create without a configuration file")
    if command.config_path is None:
        return command
    data = _read_config(command.config_path, command)
    if data is None:
        return command
    command.config = data
    try:
        settings = parse_xl_config(data.decode("utf-8"))
    except (UnicodeDecodeError, XlConfigError) as exc:
        command.refuse("gate-invalid-request", f"{shown(command.config_path)}: {exc}")
        return command
    _check_settings(command.config_path, settings, command)
    return command


def xl_disks(argv: Sequence[str]) -> tuple[list[DiskRequest], list[Reason]]:
    """The disks ``xl create [options] CONFIG`` would open, and what is refused."""
    command = parse_xl(argv)
    return command.disks, command.refusals


def sealed_config(data: bytes) -> int:
    """A memfd holding ``data``, sealed against any change: what xl will read is what we read."""
    fd = os.memfd_create("imagefactory-xl-config", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd
