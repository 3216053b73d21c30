"""The exact ``disk-image-create`` invocation for a recipe.

diskimage-builder produces the OS tree (debootstrap, chroot, package
installs, our generated element): for a build as its own ext4 root file
system image (``-t raw`` without the ``vm`` element: no partitions), which
:mod:`imagefactory.builder.rootfs` mounts as the tree to finish; for an
OS-tree layer as a tar archive (the debootstrap tarball a later DIB run
starts from). The disk is assembled by :mod:`imagefactory.builder.assemble`,
because DIB's own ``vm`` element needs device-mapper (kpartx), which build
hosts such as containers often lack.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from imagefactory.errors import HostError
from imagefactory.mirrors import BaseArchive
from imagefactory.recipe import Recipe
from imagefactory.vocab import Distro, kernel_package

#: DIB's own work directories (and its chroot mounts) go inside the staging
#: directory, so whatever an interrupted build leaves is removed with it.
WORK_DIR_NAME = "dib-tmp"
BASE_ELEMENTS = {Distro.DEBIAN: "debian-minimal", Distro.UBUNTU: "ubuntu-minimal"}
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
#: The script every release of a family links to; a host's debootstrap older
#: than a release (Debian 12's for Ubuntu 24.04) lacks only the link.
FAMILY_SCRIPT = {Distro.DEBIAN: "sid", Distro.UBUNTU: "gutsy"}
ROOTFS_NAME = "rootfs"
#: The DIB output types used: ``raw`` for a build, ``tar`` for a layer.
OUTPUT_TYPES = ("raw", "tar")

#: DIB's own fallback block-device config (``lib/common-functions``) with mkfs
#: options of ours, for a build's root file system image: it lives only in
#: staging (finished as a tree, then copied into the disk's own file system by
#: the assemble step; an interrupted build discards it), so it needs no journal,
#: and writing DIB's tree into it goes about twice as fast without one. DIB's
#: ``--mkfs-options`` cannot drop it: DIB puts ``-J size=64`` first. ``-i 4096``
#: is DIB's own inode ratio.
RAW_BLOCK_DEVICE_CONFIG = """\
- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      opts: "-i 4096 -O ^has_journal"
      mount:
        mount_point: /
        fstab:
          options: "defaults"
          fsck-passno: 1
"""

#: Lines of DIB output that mark progress worth showing (phase changes).
_PHASE_RE = re.compile(r"dib-run-parts Running \S*/(?P<phase>[a-z-]+\.d)/(?P<script>\S+)")


@dataclass(frozen=True)
class DibInvocation:
    """argv and the extra environment for one ``disk-image-create`` run."""

    argv: list[str]
    env: dict[str, str]

    @property
    def tar_path(self) -> Path:
        return Path(self.argv[self.argv.index("-o") + 1] + ".tar")

    @property
    def manifest_dir(self) -> Path:
        return Path(self.argv[self.argv.index("-o") + 1] + ".d") / "dib-manifests"


def dib_bin_dir() -> Path:
    """Where ``disk-image-create`` and its helpers live (our venv's bin)."""
    return Path(sys.executable).parent


def invocation(
    recipe: Recipe,
    *,
    archive: BaseArchive,
    elements_path: Path,
    element_name: str,
    output_dir: Path,
    image_cache: Path,
    keyrings: dict[str, Path] | None = None,
    debootstrap_scripts: Path = DEBOOTSTRAP_SCRIPTS,
    extra_elements: tuple[str, ...] = (),
    output_type: str = "tar",
    image_dir: Path | None = None,
) -> DibInvocation:
    """Build the argv and environment; pure, so tests can assert it exactly.

    ``output_type``: ``tar`` (a layer, and bare DIB in the benchmark) or
    ``raw`` (a build: the root file system image, see :mod:`.rootfs`).
    ``image_dir``: where DIB writes its output (default ``output_dir``, which
    holds DIB's work directories either way).
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"internal error: DIB output type {output_type!r}")
    bindir = dib_bin_dir()
    argv = [
        str(bindir / "disk-image-create"),
        "-a",
        recipe.base.arch.dib_arch,
        "-t",
        output_type,
        "-o",
        str((image_dir or output_dir) / ROOTFS_NAME),
        # Without DIB's 'base' element: it installs open-iscsi (whose
        # iscsid.socket listens at boot) and software-properties-common (which
        # pulls in packagekit and polkitd), nothing a worker node asked for.
        # The generated element takes over what of 'base' a worker node needs.
        "-n",
        BASE_ELEMENTS[recipe.base.distro],
        element_name,
        *extra_elements,
        *recipe.elements,
    ]
    env = {
        # DIB calls its helpers (dib-run-parts, dib-block-device) from PATH.
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TMP_DIR": str(output_dir / WORK_DIR_NAME),
        "ELEMENTS_PATH": str(elements_path),
        "DIB_RELEASE": recipe.base.release,
        "DIB_IMAGE_CACHE": str(image_cache),
        # Keep and reuse the debootstrap tarball: DIB dist-upgrades it on every
        # build, so a cached base never leaves packages stale.
        "DIB_DEBOOTSTRAP_CACHE": "1",
        "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE": "1",
        "DIB_DEBIAN_COMPONENTS": "main",
        # DIB's interface files name eth0/eth1; the kernel line keeps those names.
        "DIB_NETWORK_INTERFACE_NAMES": "eth0",
        **archive.dib_env(),
    }
    if recipe.base.distro is Distro.UBUNTU:
        # ubuntu-minimal installs linux-image-generic unless told otherwise,
        # which pulls in linux-firmware and linux-modules-extra (about 1 GB on
        # 22.04): the image would not fit its disk. The element asks for the
        # same kernel (vocab.kernel_package).
        env["DIB_UBUNTU_KERNEL"] = kernel_package(recipe.base.distro, recipe.base.arch)
    if output_type == "raw":
        env["DIB_BLOCK_DEVICE_CONFIG"] = RAW_BLOCK_DEVICE_CONFIG
    keyring = (keyrings or {}).get(str(recipe.base.distro))
    if keyring is not None:
        env["DIB_APT_KEYRING"] = str(keyring)
    if not (debootstrap_scripts / recipe.base.release).exists():
        family = debootstrap_scripts / FAMILY_SCRIPT[recipe.base.distro]
        env["DIB_DEBIAN_DEBOOTSTRAP_SCRIPT"] = str(family)
    return DibInvocation(argv=argv, env=env)


def check_keyring(recipe: Recipe, keyrings: dict[str, Path]) -> None:
    """Ubuntu bases need Ubuntu's archive keyring, which Debian hosts may lack."""
    if recipe.base.distro is not Distro.UBUNTU:
        return
    keyring = keyrings.get("ubuntu", Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"))
    if not keyring.is_file():
        raise HostError(
            f"Ubuntu builds need the Ubuntu archive keyring, not found at {keyring}",
            hint="install the package ubuntu-keyring (scripts/setup does this), "
            "or set keyrings.ubuntu in the settings",
        )


def phase_of(line: str) -> str | None:
    """A short progress label when a DIB output line starts a new hook script."""
    match = _PHASE_RE.search(line)
    if match is None:
        return None
    return f"{match['phase']}/{match['script']}"


#: apt's and dpkg's own error lines, after DIB's timestamp prefix (and the
#: ``> `` DIB puts before a hook's output) if any.
_APT_ERROR_RE = re.compile(r"(?:^|\| )(?:> )?((?:E: |dpkg: error|Err:\d* ).*)$")
#: apt's per-package progress: what the package-install hooks are doing.
_APT_PROGRESS_RE = re.compile(r"(?:^|\| )(?:> )?(?P<verb>Unpacking|Setting up) (?P<package>[^ :]+)")


def apt_error(line: str) -> str | None:
    """The apt or dpkg error a DIB output line carries, if it is one."""
    match = _APT_ERROR_RE.search(line.rstrip())
    return match[1] if match else None


def apt_progress(line: str) -> str | None:
    """``setting up <package>`` for apt's progress lines, else ``None``."""
    match = _APT_PROGRESS_RE.search(line)
    return f"{match['verb'].lower()} {match['package']}" if match else None
