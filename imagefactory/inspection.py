"""``imagefactory inspect``: observed facts and audit of ANY disk image, trusting nothing.

The file is judged by :func:`imagefactory.diskformat.check_safe` before
libguestfs sees it (format tricks, backing files, data files, size caps); it is
then opened with the checked format stated explicitly, read-only, network off,
and every string, file and listing read from it is capped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.audit import AuditReport, run_audit
from imagefactory.diskformat import DiskInfo, UnsafeImageError, check_safe
from imagefactory.diskinspect import second_opinion
from imagefactory.diskprobe import require_disk, require_file
from imagefactory.guest.facts import OsFacts, PackageFacts, os_facts, package_facts
from imagefactory.guest.handle import boot_mode, open_guest
from imagefactory.labels.make import disk_digests
from imagefactory.model.reason import Reason
from imagefactory.profiles import Profile
from imagefactory.vocab import RootPolicy

#: Formats `inspect` lets libguestfs open.
INSPECT_FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class Inspection:
    path: Path
    info: DiskInfo
    #: ``None`` when the caller already checked the disk's digest (verify).
    sha256: str | None
    sha512: str | None
    boot_mode: str
    os: OsFacts
    packages: PackageFacts
    audit: AuditReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": {
                "path": str(self.path),
                "format": self.info.format,
                "size": self.info.file_size,
                "virtual_size": self.info.virtual_size,
                "sha256": self.sha256,
                "sha512": self.sha512,
                "boot_mode": self.boot_mode,
            },
            "os": self.os.to_dict(),
            "packages": {**self.packages.summary(), "malformed": self.packages.malformed},
            "audit": self.audit.to_dict(),
        }


def inspect_image(
    path: Path,
    profile: Profile,
    *,
    declared_format: str | None = None,
    root_policy: RootPolicy = RootPolicy.NONE,
    accel: Callable[[], str],
    appliance: Callable[[], Path | None] = lambda: None,
    on_status: Callable[[str], None] = lambda text: None,
    hash_disk: bool = True,
    disk_fd: int | None = None,
) -> Inspection:
    """Check ``path`` is safe, then read its facts and audit it read-only.

    ``accel`` decides the appliance's accelerator (``kvm`` or ``tcg``); it is
    called only once the disk has passed the format check, since deciding may
    probe KVM; ``appliance``, likewise, the libguestfs appliance to boot
    (``None``: libguestfs's own). ``on_status`` hears what is happening (the launch alone takes
    10-20 s under TCG). ``hash_disk=False`` skips the sha256 and sha512 pass:
    for a caller that has just checked the digest of the very bytes it hands
    over (verify, through its open descriptor). ``disk_fd``: ``path`` names this
    open descriptor (``/proc/PID/fd/N``, for the appliance's qemu to reopen): the
    format checks read through it rather than refusing the link.
    """
    require_file(path)
    info = check_safe(
        path, allowed_formats=INSPECT_FORMATS, declared_format=declared_format, fd=disk_fd
    )
    # Detection alone is not trusted (no --format, or one that agrees): a second,
    # independent reader of the bytes must name the same single format.
    disagree = second_opinion(path, info.format, disk_fd)
    if disagree:
        raise UnsafeImageError(
            path, [Reason("format-inspector", "format", f"{path}: {m}") for m in disagree]
        )
    # Before the 10-20 s appliance launch: a text file is a "safe raw image" too.
    require_disk(path, info.format)
    sha256 = sha512 = None
    if hash_disk:
        on_status(f"sha256 and sha512 of the {info.format} disk")
        sha256, sha512 = disk_digests(path)
    chosen = accel()
    on_status(f"launching the libguestfs appliance ({chosen}, read-only, network off)")
    with open_guest(path, info.format, readonly=True, accel=chosen, appliance=appliance()) as guest:
        on_status("reading the operating system and its packages")
        facts = os_facts(guest)
        packages = package_facts(guest)
        mode = boot_mode(guest)
        on_status(f"auditing against {profile.id}")
        report = run_audit(guest, profile, root_policy)
    return Inspection(path, info, sha256, sha512, mode, facts, packages, report)
