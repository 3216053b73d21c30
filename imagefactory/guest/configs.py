"""Parsers for the guest configuration files the hardening writes and the audit reads.

All input is hostile: lines are split, never evaluated; unknown syntax is
ignored rather than guessed at. The hardening uses the same parsers, so what it
writes is what the audit reads.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass

from imagefactory.guest.view import GuestView, cap_text, guest_glob, read_text

SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_DROPIN_DIR = "/etc/ssh/sshd_config.d"
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
MAX_INCLUDES = 64


@dataclass(frozen=True)
class Setting:
    """A configuration value and where it was read (the evidence)."""

    value: str
    path: str


def sshd_settings(guest: GuestView) -> dict[str, Setting] | None:
    """sshd's effective global settings (first value wins, as in sshd); None if no sshd_config."""
    text = read_text(guest, SSHD_CONFIG)
    if text is None:
        return None
    found: dict[str, Setting] = {}
    _sshd_lines(guest, SSHD_CONFIG, text, found, depth=0)
    return found


def _sshd_lines(
    guest: GuestView, path: str, text: str, found: dict[str, Setting], depth: int
) -> bool:
    """Record settings from ``text``; False once a Match block starts (global part over)."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.replace("=", " ", 1).partition(" ")
        key, value = key.lower(), value.strip().strip('"')
        if key == "match":
            return False
        if key == "include":
            if depth > 4:
                continue
            for pattern in value.split():
                full = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                for inc in guest_glob(guest, full)[:MAX_INCLUDES]:
                    inc_text = read_text(guest, inc)
                    if inc_text is not None and not _sshd_lines(
                        guest, inc, inc_text, found, depth + 1
                    ):
                        return False
            continue
        found.setdefault(key, Setting(value, path))
    return True


def sysctl_settings(guest: GuestView) -> dict[str, Setting]:
    """The sysctl values set at boot, as systemd-sysctl applies them (last one wins).

    Files from every sysctl.d directory are ordered by file name (a name in an
    earlier directory hides the same name in a later one), then
    ``/etc/sysctl.conf`` is applied last as on Debian (99-sysctl.conf links it).
    """
    by_name: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for name in guest.listdir(directory):
            if name.endswith(".conf"):
                by_name.setdefault(name, f"{directory}/{name}")
    files = [by_name[name] for name in sorted(by_name)]
    if "99-sysctl.conf" not in by_name:
        files.append("/etc/sysctl.conf")
    values: dict[str, Setting] = {}
    for path, line in _config_lines(guest, files):
        if line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lstrip("-").replace("/", ".")
        values[key] = Setting(value.strip(), path)
    return values


def _config_lines(guest: GuestView, files: list[str]) -> Iterator[tuple[str, str]]:
    """(path, stripped line) for every non-blank line of the readable ``files``."""
    for path in files:
        text = read_text(guest, path)
        if text is None:
            continue
        for raw in text.splitlines():
            line = raw.strip()
            if line:
                yield path, line


@dataclass(frozen=True)
class FstabEntry:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


def fstab_entries(text: str) -> list[FstabEntry]:
    entries = []
    for raw in text.splitlines():
        fields = raw.split()
        if len(fields) < 4 or fields[0].startswith("#"):
            continue
        entries.append(FstabEntry(fields[0], fields[1], fields[2], tuple(fields[3].split(","))))
    return entries


def colon_file(text: str, width: int) -> list[list[str]]:
    """Rows of /etc/passwd, /etc/shadow or /etc/group (short lines padded)."""
    rows = []
    for raw in text.splitlines():
        if not raw or raw.startswith("#"):
            continue
        fields = raw.split(":")
        rows.append(fields + [""] * (width - len(fields)))
    return rows


def password_state(field: str) -> str:
    """``empty``, ``locked`` or ``set`` -- never the hash itself."""
    if field == "":
        return "empty"
    if field.startswith(("!", "*")):
        return "locked"
    return "set"


def sudo_user_rules(guest: GuestView) -> list[Setting]:
    """sudoers rule lines granting anything to someone other than root."""
    files = ["/etc/sudoers"] + [
        f"/etc/sudoers.d/{n}"
        for n in guest.listdir("/etc/sudoers.d")
        if "." not in n and not n.endswith("~") and n != "README"
    ]
    rules = []
    for path, line in _config_lines(guest, files):
        if line.startswith(("#", "Defaults", "@include", "Cmnd_Alias")):
            continue
        if line.startswith(("Host_Alias", "User_Alias", "Runas_Alias")):
            continue
        who = line.split(None, 1)[0]
        if who == "root":
            continue
        rules.append(Setting(line, path))
    return rules


def group_members(guest: GuestView, groups: tuple[str, ...]) -> dict[str, list[str]]:
    text = read_text(guest, "/etc/group") or ""
    members = {}
    for row in colon_file(text, 4):
        if row[0] in groups and row[3]:
            members[row[0]] = row[3].split(",")
    return members


def enabled_units(guest: GuestView, patterns: tuple[str, ...]) -> list[str]:
    """Enablement links under /etc/systemd/system/*.wants/ for units matching ``patterns``."""
    hits = []
    for wants in guest_glob(guest, "/etc/systemd/system/*.wants"):
        for name in guest.listdir(wants):
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                hits.append(f"{wants}/{name}")
    return hits


def all_enabled_units(guest: GuestView) -> list[tuple[str, str]]:
    """(link, unit name) of every enablement link under /etc/systemd/system/*.wants/."""
    units = []
    for wants in guest_glob(guest, "/etc/systemd/system/*.wants"):
        for name in sorted(guest.listdir(wants)):
            units.append((f"{wants}/{name}", name))
    return units


_LISTEN_KEYS = ("ListenStream", "ListenDatagram", "ListenSequentialPacket", "ListenNetlink")


def socket_listens(guest: GuestView, unit: str) -> list[str]:
    """What a socket unit listens on (``ListenStream=[::]:111``), from its unit file."""
    path = unit_installed(guest, unit)
    text = read_text(guest, path, 65536) if path is not None else None
    found = []
    for line in (text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in _LISTEN_KEYS and value.strip():
            found.append(cap_text(f"{key}={value.strip()}"))
    return found


def unit_installed(guest: GuestView, unit: str) -> str | None:
    for directory in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"):
        path = f"{directory}/{unit}"
        if guest.lstat(path) is not None:
            return path
    return None
