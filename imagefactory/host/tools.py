"""What the build host must have, and the versions of what it has.

Tool versions go into the build record and the cache key: a new
diskimage-builder or e2fsprogs can change the image, so it is an input.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from imagefactory import __version__
from imagefactory.errors import HostError, MissingToolError
from imagefactory.run import DEBIAN_PACKAGES, run
from imagefactory.vocab import Arch

#: Tools the build stage runs (directly or through diskimage-builder).
BUILD_TOOLS = ("debootstrap", "sudo", "qemu-img", "sfdisk", "mkfs.ext4", "tar", "chroot")


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


def require_build_host(arch: Arch) -> None:
    """Everything a build needs, checked before any work starts."""
    if os.geteuid() != 0:
        raise HostError(
            "imagefactory build must run as root",
            hint="diskimage-builder's chroot and the image's file ownership need root; "
            "run it with sudo",
        )
    require_tools(*BUILD_TOOLS, "disk-image-create")
    if arch is Arch.AARCH64 and os.uname().machine != "aarch64":
        raise HostError(
            "building aarch64 images on this host is not supported yet",
            hint="build aarch64 recipes on an aarch64 host; cross-builds need qemu-user "
            "binfmt and UEFI disk assembly, which imagefactory does not do yet",
        )


#: Debian packages whose versions shape the image.
VERSIONED_PACKAGES = ("debootstrap", "qemu-utils", "e2fsprogs", "fdisk", "tar")


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the image."""
    versions = {"imagefactory": __version__}
    try:
        versions["diskimage-builder"] = metadata.version("diskimage-builder")
    except metadata.PackageNotFoundError:
        versions["diskimage-builder"] = "absent"
    listed = run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *VERSIONED_PACKAGES],
        capture=True,
        check=False,
    ).stdout
    found = dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
    for package in VERSIONED_PACKAGES:
        versions[package] = found.get(package) or "absent"
    return versions
