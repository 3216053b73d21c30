"""Facts read from the image itself: OS, architecture, kernel, packages, patch date.

Everything comes from files in the guest, read through a capped
:class:`~imagefactory.guest.view.GuestView`; nothing is taken from the recipe.
Every string kept is capped and cleaned (:func:`cap_text`), and package
names/versions must match Debian's syntax or the package is reported as
malformed rather than carried into the labels.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from imagefactory.guest.view import GuestView, cap_text, guest_glob, read_text

DPKG_STATUS = "/var/lib/dpkg/status"
MAX_STATUS = 64 << 20
MAX_PACKAGES = 20_000
#: Bytes of a gzip'd changelog read to find its newest entry's date.
CHANGELOG_HEAD = 16 << 10
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,127}$")
PACKAGE_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]{1,128}$")
PACKAGE_ARCH = re.compile(r"^[a-z0-9-]{1,32}$")
_TRAILER = re.compile(r"^ -- .*?>  ?(.{10,60})$", re.MULTILINE)
ELF_MACHINES = {0x3E: "x86_64", 0x03: "i386", 0xB7: "aarch64"}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    source: str
    #: Names this package Depends/Pre-Depends on (every alternative), and those it
    #: Provides: the SBOM says why each package is there. Not in the manifest digest.
    depends: tuple[str, ...] = field(default=(), compare=False)
    provides: tuple[str, ...] = field(default=(), compare=False)
    #: dpkg's Priority and Essential: what debootstrap's base consists of.
    priority: str = field(default="", compare=False)
    essential: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "arch": self.arch}


@dataclass(frozen=True)
class OsFacts:
    distro: str
    version: str
    codename: str
    pretty_name: str
    arch: str
    kernel: str
    contextualisation: str

    def to_dict(self) -> dict[str, str]:
        return {
            "distro": self.distro,
            "version": self.version,
            "codename": self.codename,
            "pretty_name": self.pretty_name,
            "arch": self.arch,
            "kernel": self.kernel,
            "contextualisation": self.contextualisation,
        }


def os_release(guest: GuestView) -> dict[str, str]:
    text = read_text(guest, "/etc/os-release", 16 << 10) or read_text(
        guest, "/usr/lib/os-release", 16 << 10
    )
    values = {}
    for raw in (text or "").splitlines()[:200]:
        key, sep, value = raw.partition("=")
        if sep and re.fullmatch(r"[A-Z_]{1,40}", key):
            values[key] = cap_text(value.strip().strip("\"'"), 128)
    return values


def elf_arch(guest: GuestView) -> str:
    """The architecture of the guest's /bin/sh, from its ELF header."""
    for path in ("/bin/sh", "/usr/bin/sh", "/usr/bin/dpkg"):
        head = guest.read(path, 64)
        if head and len(head) >= 20 and head[:4] == b"\x7fELF":
            order = "<" if head[5] == 1 else ">"
            (machine,) = struct.unpack(order + "H", head[18:20])
            return ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")
    return "unknown"


def kernel_version(guest: GuestView) -> str:
    """The kernel the boot loader starts (grub.cfg), else the newest in /boot."""
    cfg = read_text(guest, "/boot/grub/grub.cfg", 256 << 10) or ""
    match = re.search(r"^\s*linux\s+\S*/vmlinuz-(\S+)", cfg, re.MULTILINE)
    if match:
        return cap_text(match.group(1), 64)
    kernels = sorted(p.rsplit("vmlinuz-", 1)[1] for p in guest_glob(guest, "/boot/vmlinuz-*"))
    return cap_text(kernels[-1], 64) if kernels else "unknown"


def contextualisation(guest: GuestView) -> str:
    for path in ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg"):
        if guest.lstat(path) is not None:
            return "cloud-init"
    return "none"


def os_facts(guest: GuestView) -> OsFacts:
    rel = os_release(guest)
    return OsFacts(
        distro=rel.get("ID", "unknown"),
        version=rel.get("VERSION_ID", "unknown"),
        codename=rel.get("VERSION_CODENAME", ""),
        pretty_name=rel.get("PRETTY_NAME", ""),
        arch=elf_arch(guest),
        kernel=kernel_version(guest),
        contextualisation=contextualisation(guest),
    )


def installed_packages(guest: GuestView) -> tuple[list[Package], int]:
    """Installed packages from dpkg's status file, sorted; and how many entries were malformed."""
    text = read_text(guest, DPKG_STATUS, MAX_STATUS) or ""
    packages: dict[tuple[str, str], Package] = {}
    malformed = 0
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                continue
            key, sep, value = line.partition(":")
            if sep and key in _STATUS_FIELDS:
                fields[key] = value.strip()
        if not fields.get("Package") or not fields.get("Status", "").endswith(" installed"):
            continue
        name, version = fields["Package"], fields.get("Version", "")
        arch = fields.get("Architecture", "")
        source = fields.get("Source", name).split(" ", 1)[0]
        if not (
            PACKAGE_NAME.match(name)
            and PACKAGE_VERSION.match(version)
            and PACKAGE_ARCH.match(arch)
            and PACKAGE_NAME.match(source)
        ):
            malformed += 1
            continue
        depends = _names(fields.get("Depends", "") + "," + fields.get("Pre-Depends", ""))
        packages[(name, arch)] = Package(
            name,
            version,
            arch,
            source,
            depends=depends,
            provides=_names(fields.get("Provides", "")),
            priority=fields.get("Priority", ""),
            essential=fields.get("Essential", "") == "yes",
        )
        if len(packages) > MAX_PACKAGES:
            break
    return sorted(packages.values(), key=lambda p: (p.name, p.arch)), malformed


_STATUS_FIELDS = frozenset(
    (
        "Package",
        "Status",
        "Version",
        "Architecture",
        "Source",
        "Depends",
        "Pre-Depends",
        "Provides",
        "Priority",
        "Essential",
    )
)


def _names(relation: str) -> tuple[str, ...]:
    """Package names of a dpkg relation field (``a (>= 1) | b:any, c``), each alternative.

    Only names that look like package names are kept: the status file is guest
    content, read as hostile.
    """
    names = []
    for alternative in relation.replace("|", ",").split(","):
        name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
        if name and PACKAGE_NAME.match(name):
            names.append(name)
    return tuple(dict.fromkeys(names))


def manifest_digest(packages: list[Package]) -> str:
    """sha256 hex of the canonical package manifest (sorted name/version/arch)."""
    data = json.dumps([p.to_dict() for p in packages], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def changelog_date(guest: GuestView, package: Package) -> dt.date | None:
    """The date of the newest entry of a package's Debian changelog."""
    for name in (package.name, package.source):
        for leaf in ("changelog.Debian.gz", "changelog.gz"):
            head = guest.read(f"/usr/share/doc/{name}/{leaf}", CHANGELOG_HEAD)
            if not head:
                continue
            try:
                text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 256 << 10)
            except zlib.error:
                continue
            match = _TRAILER.search(text.decode("utf-8", errors="replace"))
            if match is None:
                continue
            try:
                when = email.utils.parsedate_to_datetime(match.group(1).strip())
            except (TypeError, ValueError):
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            try:
                return when.astimezone(dt.UTC).date()
            except (TypeError, ValueError):
                continue
    return None


def patch_date(guest: GuestView, packages: list[Package]) -> str | None:
    """ISO date of the newest package (by its changelog), or None if none is dated."""
    newest: dt.date | None = None
    for package in packages:
        date = changelog_date(guest, package)
        if date is not None and (newest is None or date > newest):
            newest = date
    return newest.isoformat() if newest else None


@dataclass(frozen=True)
class PackageFacts:
    packages: list[Package]
    malformed: int
    manifest_sha256: str
    patch_date: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.packages),
            "manifest_sha256": self.manifest_sha256,
            "patch_date": self.patch_date,
        }


def package_facts(guest: GuestView) -> PackageFacts:
    packages, malformed = installed_packages(guest)
    return PackageFacts(packages, malformed, manifest_digest(packages), patch_date(guest, packages))
