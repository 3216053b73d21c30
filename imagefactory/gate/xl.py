"""``imagefactory gate -- xl create domain.cfg``: the disks of an xl domain configuration.

xl (Xen's toolstack) takes disks from the configuration file's ``disk = [...]``
list; each entry is a disk specification (xl-disk-configuration(5)). Only the
unambiguous ``key=value`` form is accepted, with an explicit ``format=``;
positional and legacy forms, block ``script=``s (a program run in dom0), and
anything that would boot code no verified image vouches for (``kernel``,
``ramdisk``, ``bootloader`` -- pygrub parses the guest's disk in dom0) are
refused. Overrides on the command line (``KEY=VALUE``) of those keys too.

The configuration file is read with a size cap and parsed without executing
anything: the ``disk`` list is cut out by bracket matching (quotes and
comments respected) and read with :func:`ast.literal_eval`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence

from imagefactory.gate.disks import DiskRequest
from imagefactory.verify.verdict import Reason

STEP = "gate"
MAX_CONFIG_BYTES = 1 << 20
#: Keys that make xl boot or run something other than the verified disks.
_UNVERIFIED_BOOT = ("kernel", "ramdisk", "bootloader", "device_model_override")
#: xl create options that take a value (the rest are flags).
_VALUED = ("-f", "--defconfig")
Refuse = Callable[[str, str], None]
_KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)


def _list_text(config: str, start: int) -> str | None:
    """The ``[...]`` starting at ``start``, comments outside strings dropped."""
    depth, quote, out = 0, "", []
    i = start
    while i < len(config):
        c = config[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(config):
                out.append(config[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            out.append(c)
        elif c == "#":
            while i < len(config) and config[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
            if c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
                if depth == 0:
                    return "".join(out)
        i += 1
    return None


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
            return None, None, f"positional item {item!r}: write key=value (format=, target=)"
        options[key.strip()] = value.strip()
    if "script" in options:
        return None, None, f"script={options['script']!r} runs a program in dom0"
    if options.get("devtype") == "cdrom" and not target:
        return None, None, None  # an empty CD drive opens nothing
    if target is None:
        return None, None, "no target= (the disk's path)"
    return target.strip(), options.get("format"), None


def _command(args: list[str], refuse: Refuse) -> str | None:
    """The configuration file of ``create [options] CONFIG [KEY=VALUE...]``."""
    config_path: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _VALUED and i + 1 < len(args):
            config_path = args[i + 1] if arg == "-f" else config_path
            i += 2
            continue
        if arg.startswith("-f") and arg != "-f":
            config_path = arg[2:].lstrip("=")
        elif "=" in arg and not arg.startswith("-"):
            key = arg.split("=", 1)[0].strip()
            if key == "disk" or key in _UNVERIFIED_BOOT:
                refuse("gate-invalid-request", f"command-line override {key}=: not checked here")
        elif not arg.startswith("-") and config_path is None:
            config_path = arg
        i += 1
    return config_path


def _read_config(path: str, refuse: Refuse) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        refuse("gate-invalid-request", f"{path}: cannot read: {exc.strerror}")
        return None
    if len(data) > MAX_CONFIG_BYTES:
        refuse("gate-invalid-request", f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        return None
    return data.decode("utf-8", "replace")


def _disk_entries(path: str, config: str, refuse: Refuse) -> list[str]:
    keys = list(_KEY.finditer(config))
    for match in keys:
        if match.group(1) in _UNVERIFIED_BOOT:
            refuse(
                "gate-direct-kernel",
                f"{path}: {match.group(1)}= boots code no verified image vouches for",
            )
    disk_keys = [m for m in keys if m.group(1) == "disk"]
    if len(disk_keys) > 1:
        refuse("gate-invalid-request", f"{path}: disk= is set more than once")
    if len(disk_keys) != 1:
        return []
    start = config.find("[", disk_keys[0].end())
    text = _list_text(config, start) if start >= 0 else None
    try:
        entries = ast.literal_eval(text) if text is not None else None
    except (ValueError, SyntaxError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        refuse("gate-invalid-request", f"{path}: disk= is not a list of strings")
        return []
    return entries


def xl_disks(argv: Sequence[str]) -> tuple[list[DiskRequest], list[Reason]]:
    """The disks ``xl create [options] CONFIG [KEY=VALUE...]`` would open, and what is refused."""
    refusals: list[Reason] = []

    def refuse(code: str, message: str) -> None:
        refusals.append(Reason(code, STEP, message))

    args = list(argv[1:])
    if not args or args[0] != "create":
        refuse("gate-invalid-request", "only 'xl create' starts a domain the gate can check")
        return [], refusals
    config_path = _command(args[1:], refuse)
    if config_path is None:
        refuse("gate-invalid-request", "xl create without a configuration file")
        return [], refusals
    config = _read_config(config_path, refuse)
    if config is None:
        return [], refusals
    disks = []
    for n, spec in enumerate(_disk_entries(config_path, config, refuse), 1):
        target, fmt, problem = parse_disk_spec(spec)
        where = f"disk #{n}"
        if problem is not None:
            refuse("gate-unverifiable-disk", f"{where}: {problem}")
        elif target is not None:
            disks.append(DiskRequest(target, fmt, where))
    return disks, refusals
