"""The closed vocabularies of imagefactory, defined once.

Recipes, labels and the build all speak these words. Each is a ``StrEnum`` so a
value compares equal to (and serialises as) the string a user writes, with the
few facts the rest of the code needs kept beside it as small properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Arch(StrEnum):
    """A CPU architecture, spelt as the kernel (``uname -m``) spells it."""

    X86_64 = "x86_64"
    I386 = "i386"
    AARCH64 = "aarch64"

    @property
    def dib_arch(self) -> str:
        """The Debian architecture name diskimage-builder's ``ARCH`` expects."""
        return _DIB_ARCH[self]

    @property
    def qemu_system(self) -> str:
        """The qemu system emulator that boots this architecture."""
        return _QEMU_SYSTEM[self]

    @property
    def glance(self) -> str:
        """OpenStack Glance's ``architecture`` name (its metadefs follow libosinfo)."""
        return "i686" if self is Arch.I386 else self.value

    @property
    def serial_console(self) -> str:
        """The kernel's name of the first serial port (PL011 on arm64 virt machines)."""
        return "ttyAMA0" if self is Arch.AARCH64 else "ttyS0"


_DIB_ARCH = {Arch.X86_64: "amd64", Arch.I386: "i386", Arch.AARCH64: "arm64"}

#: Names other tools give the architectures (Debian's, Go's, Windows'): what a
#: "did you mean" suggests for them. Never accepted as values.
ARCH_ALIASES: tuple[tuple[str, str], ...] = (
    ("amd64", "x86_64"),
    ("x64", "x86_64"),
    ("x86-64", "x86_64"),
    ("arm64", "aarch64"),
    ("armv8", "aarch64"),
    ("i686", "i386"),
    ("i586", "i386"),
    ("x86", "i386"),
)
_QEMU_SYSTEM = {
    Arch.X86_64: "qemu-system-x86_64",
    # An x86_64 emulator boots i386 guests; there is no reason to need another binary.
    Arch.I386: "qemu-system-x86_64",
    Arch.AARCH64: "qemu-system-aarch64",
}


@dataclass(frozen=True)
class Release:
    """One release of a distribution: its number and its codename."""

    distro: Distro
    version: str
    codename: str


class Distro(StrEnum):
    """A supported base distribution."""

    DEBIAN = "debian"
    UBUNTU = "ubuntu"

    @property
    def releases(self) -> tuple[Release, ...]:
        """The supported releases, oldest first."""
        return tuple(
            Release(self, version, codename) for version, codename in _RELEASES[self].items()
        )

    def release(self, name: str) -> Release | None:
        """The release named by its version (``"12"``) or codename (``"bookworm"``)."""
        for release in self.releases:
            if name in (release.version, release.codename):
                return release
        return None

    def supports(self, arch: Arch) -> bool:
        """Whether the distribution's current releases are built for ``arch``."""
        return arch in _ARCHES[self]

    def kernel_package(self, arch: Arch) -> str:
        """The kernel meta-package to install for ``arch``."""
        if self is Distro.UBUNTU:
            # Ubuntu's virtual flavour is the small kernel meant for VMs, on every arch.
            return "linux-image-virtual"
        return _DEBIAN_KERNEL[arch]


_RELEASES: Mapping[Distro, Mapping[str, str]] = MappingProxyType(
    {
        Distro.DEBIAN: MappingProxyType({"11": "bullseye", "12": "bookworm", "13": "trixie"}),
        Distro.UBUNTU: MappingProxyType({"22.04": "jammy", "24.04": "noble"}),
    }
)
_ARCHES: Mapping[Distro, frozenset[Arch]] = MappingProxyType(
    {
        Distro.DEBIAN: frozenset(Arch),
        # Ubuntu stopped shipping i386 installable systems with 20.04.
        Distro.UBUNTU: frozenset({Arch.X86_64, Arch.AARCH64}),
    }
)
_DEBIAN_KERNEL = {
    Arch.X86_64: "linux-image-amd64",
    Arch.I386: "linux-image-686",
    Arch.AARCH64: "linux-image-arm64",
}


def kernel_package(distro: Distro, arch: Arch) -> str:
    """The kernel meta-package to install for ``distro`` on ``arch``."""
    return distro.kernel_package(arch)


class RootPolicy(StrEnum):
    """Who may become root on a running worker node."""

    NONE = "none"
    SITE_ADMIN = "site-admin"
    USER = "user"

    @property
    def user_has_root(self) -> bool:
        """Whether the job's user (not only the site) gets root."""
        return self is RootPolicy.USER


class WorkerNodeModel(StrEnum):
    """The JSPG worker-node model: how the image's disk lives on."""

    PERSISTENT = "persistent"
    NON_PERSISTENT = "non-persistent"
    LIBRARY = "library"
    USER_DEFINED = "user-defined"

    @property
    def site_managed(self) -> bool:
        """Whether the site keeps the instance (or its disk) beyond one user's job.

        A user with root must not be given such an instance: whatever they change
        would outlive them.
        """
        return self in (WorkerNodeModel.PERSISTENT, WorkerNodeModel.LIBRARY)


class FsAccess(StrEnum):
    """A site file system the worker node may mount."""

    NONE = "none"
    NFS = "nfs"
    DCAP = "dcap"
    RFIO = "rfio"
    CVMFS = "cvmfs"

    @property
    def is_site_filesystem(self) -> bool:
        """Whether this grants access to a site file system (everything but ``none``)."""
        return self is not FsAccess.NONE


class DiskFormat(StrEnum):
    """A disk image format a build may produce."""

    QCOW2 = "qcow2"
    RAW = "raw"

    @property
    def extension(self) -> str:
        """The file name extension of an image in this format."""
        return self.value


class ScriptPhase(StrEnum):
    """When a recipe script runs, as a diskimage-builder element phase."""

    INSTALL = "install"
    POST_INSTALL = "post-install"
    FINALISE = "finalise"

    @property
    def dib_phase_dir(self) -> str:
        """The element directory diskimage-builder runs this phase's scripts from."""
        return f"{self.value}.d"


class BootMode(StrEnum):
    """How the image's firmware starts it."""

    BIOS = "bios"
    UEFI = "uefi"

    def supported_on(self, arch: Arch) -> bool:
        """Whether images of ``arch`` are built for this boot mode.

        i386 stays BIOS (32-bit UEFI machines are rare and GRUB's ia32 EFI
        loader is not tested here); aarch64 has no BIOS.
        """
        return arch in _BOOT_ARCHES[self]

    @classmethod
    def usual_for(cls, arch: Arch) -> BootMode:
        """The boot mode of a recipe that names none: BIOS where there is one."""
        return cls.BIOS if cls.BIOS.supported_on(arch) else cls.UEFI


_BOOT_ARCHES = {
    BootMode.BIOS: frozenset({Arch.X86_64, Arch.I386}),
    BootMode.UEFI: frozenset({Arch.X86_64, Arch.AARCH64}),
}

#: Per architecture: the name of the EFI removable-media loader
#: (``/EFI/BOOT/BOOT<suffix>.EFI``) and GRUB's EFI platform.
EFI_SUFFIX = {Arch.X86_64: "x64", Arch.AARCH64: "aa64", Arch.I386: "ia32"}
GRUB_EFI_PLATFORM = {Arch.X86_64: "x86_64-efi", Arch.AARCH64: "arm64-efi", Arch.I386: "i386-efi"}


class Contextualisation(StrEnum):
    """How an instance receives its site configuration at first boot."""

    NONE = "none"
    CLOUD_INIT = "cloud-init"


class Accel(StrEnum):
    """How qemu (the boot test, the libguestfs appliance) is accelerated on this host."""

    AUTO = "auto"  #: KVM where a probe shows it really works, TCG otherwise
    KVM = "kvm"
    TCG = "tcg"
