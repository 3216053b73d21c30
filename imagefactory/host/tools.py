"""What the build host must have, and the versions of what it has.

Tool versions go into the build record and the cache key: a new
diskimage-builder or e2fsprogs can change the image, so it is an input.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from imagefactory import __version__
from imagefactory.errors import HostError, MissingToolError
from imagefactory.fsutil import atomic_write, file_identity
from imagefactory.run import DEBIAN_PACKAGES, run
from imagefactory.vocab import Arch, BootMode, Distro, Release

#: Tools the build stage runs (directly or through diskimage-builder).
BUILD_TOOLS = ("debootstrap", "sudo", "qemu-img", "sfdisk", "mkfs.ext4", "tar", "chroot")
#: And for UEFI images: the EFI system partition is made and filled without a mount.
UEFI_TOOLS = ("mkfs.vfat", "mcopy")


def missing(tools: tuple[str, ...], extra_path: Path | None = None) -> dict[str, str]:
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    path = f"{path}:/usr/sbin:/sbin"
    if extra_path is not None:
        path = f"{extra_path}:{path}"
    return {t: DEBIAN_PACKAGES.get(t, t) for t in tools if shutil.which(t, path=path) is None}


def require_tools(*tools: str) -> None:
    """Raise one error naming every missing tool and its Debian package."""
    absent = missing(tools, Path(sys.executable).parent)
    if absent:
        raise MissingToolError(absent)


def require_build_host(arch: Arch, boot: BootMode = BootMode.BIOS) -> None:
    """Everything a build needs, checked before any work starts."""
    if os.geteuid() != 0:
        raise HostError(
            "imagefactory build must run as root",
            hint="diskimage-builder's chroot and the image's file ownership need root; "
            "run it with sudo",
        )
    uefi = UEFI_TOOLS if boot is BootMode.UEFI else ()
    require_tools(*BUILD_TOOLS, *uefi, "disk-image-create")
    problem = foreign_arch_problem(arch)
    if problem is not None:
        raise HostError(
            f"cannot build {arch} images on this {os.uname().machine} host: {problem}",
            hint="run scripts/setup as root (it installs qemu-user-static, mounts"
            " binfmt_misc and registers the format)",
        )


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
#: The binfmt_misc entry qemu-user-static registers per foreign architecture.
BINFMT_ENTRY = {Arch.AARCH64: "qemu-aarch64"}
#: Which machines run which image architectures natively.
NATIVE = {"x86_64": {Arch.X86_64, Arch.I386}, "aarch64": {Arch.AARCH64}}


def foreign_arch_problem(
    arch: Arch, *, machine: str | None = None, binfmt: Path = BINFMT_DIR
) -> str | None:
    """Why this host cannot run ``arch``'s binaries in a chroot, or None when it can.

    A foreign architecture runs through qemu-user-static registered with
    binfmt_misc with the ``F`` flag (the interpreter is opened at registration,
    so it works inside the chroot without being copied there).
    """
    host = machine or os.uname().machine
    if arch in NATIVE.get(host, set()):
        return None
    entry = BINFMT_ENTRY.get(arch)
    if entry is None:
        return f"no emulation is known for {arch}"
    try:
        lines = (binfmt / entry).read_text(encoding="ascii").splitlines()
    except OSError:
        return f"{binfmt / entry} is not registered (binfmt_misc with qemu-user-static)"
    if not lines or lines[0].strip() != "enabled":
        return f"{binfmt / entry} is disabled"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"{binfmt / entry} lacks the F flag, so it does not work inside a chroot"
    return None


#: Debian packages whose versions shape the image.
VERSIONED_PACKAGES = (
    "debootstrap",
    "qemu-utils",
    "e2fsprogs",
    "fdisk",
    "tar",
    "dosfstools",
    "mtools",
)


#: dpkg's database: replaced (renamed over) whenever a package is installed,
#: upgraded or removed, so its identity says whether the versions read from it hold.
DPKG_STATUS = Path("/var/lib/dpkg/status")


def tool_versions(cache_file: Path | None = None) -> dict[str, str]:
    """Versions of everything that shapes the image.

    With ``cache_file``, the Debian packages' versions are kept there with the
    identity of dpkg's database (:func:`imagefactory.fsutil.file_identity`:
    dpkg renames a new one over it on every change, which changes its inode and
    ctime) and read back while that identity holds, instead of running
    ``dpkg-query`` for every build (a tenth of a second, most of a cached
    rebuild). Any doubt (no cache, another identity, another package list)
    asks dpkg.
    """
    versions = {"imagefactory": __version__}
    try:
        versions["diskimage-builder"] = metadata.version("diskimage-builder")
    except metadata.PackageNotFoundError:
        versions["diskimage-builder"] = "absent"
    found = _cached_dpkg_versions(cache_file)
    if found is None:
        found = _dpkg_versions(cache_file)
    for package in VERSIONED_PACKAGES:
        versions[package] = found.get(package) or "absent"
    return versions


def _dpkg_identity() -> list[int] | None:
    try:
        return file_identity(os.stat(DPKG_STATUS))
    except OSError:
        return None


def _cached_dpkg_versions(cache_file: Path | None) -> dict[str, str] | None:
    if cache_file is None:
        return None
    try:
        doc = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    identity = _dpkg_identity()
    if (
        not isinstance(doc, dict)
        or identity is None
        or doc.get("dpkg_status") != identity
        or doc.get("packages") != list(VERSIONED_PACKAGES)
        or not isinstance(doc.get("versions"), dict)
    ):
        return None
    versions: dict[str, str] = doc["versions"]
    return versions


def _dpkg_versions(cache_file: Path | None) -> dict[str, str]:
    identity = _dpkg_identity()  # before the query: a change during it is not hidden
    listed = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *VERSIONED_PACKAGES],
        capture=True,
        check=False,
    ).stdout
    found = dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
    if cache_file is not None and identity is not None:
        doc = {"dpkg_status": identity, "packages": list(VERSIONED_PACKAGES), "versions": found}
        with contextlib.suppress(OSError):  # a cache that cannot be written costs time only
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, json.dumps(doc, indent=1), durable=False)
    return found


@dataclass(frozen=True)
class Flavour:
    """One kind of image a recipe can ask for: distribution release, arch, boot mode."""

    distro: Distro
    release: Release
    arch: Arch
    boot: BootMode

    @property
    def name(self) -> str:
        return f"{self.distro}-{self.release.version}-{self.arch}-{self.boot}"


def flavours() -> list[Flavour]:
    """Every flavour the recipe rules accept, in vocabulary order."""
    return [
        Flavour(distro, release, arch, boot)
        for distro in Distro
        for release in distro.releases
        for arch in Arch
        if distro.supports(arch)
        for boot in BootMode
        if boot.supported_on(arch)
    ]


def flavour_problems(
    flavour: Flavour,
    *,
    absent: Mapping[str, str],
    firmware: Callable[[Arch], Path | None],
    machine: str | None = None,
) -> list[str]:
    """Why this host cannot build and boot-test ``flavour`` (empty: it can).

    ``absent`` is the missing tools (:func:`missing`); ``firmware`` gives the
    UEFI firmware file of an arch, or None when it is not installed.
    """
    problems = []
    foreign = foreign_arch_problem(flavour.arch, machine=machine)
    if foreign is not None:
        problems.append(foreign)
    tools = [*BUILD_TOOLS, flavour.arch.qemu_system]
    if flavour.boot is BootMode.UEFI:
        tools += UEFI_TOOLS
        if firmware(flavour.arch) is None:
            problems.append(f"no UEFI firmware for {flavour.arch} boot tests")
    problems += [f"missing {t} (Debian package {absent[t]})" for t in tools if t in absent]
    return problems
