"""The fresh inspection verify runs for untrusted and user-defined images.

It is :func:`imagefactory.inspection.inspect_image` (format checked before
libguestfs sees the file, read-only, network off, capped reads) turned into
observed facts keyed by label path; :mod:`imagefactory.verify.pipeline`
compares each with the signed label. The audit runs against the hardening
profile and root policy the labels claim, so a disk whose labels say "root
locked" but whose shadow file says otherwise fails ``audit.passed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagefactory.errors import ImageFactoryError, InspectionError
from imagefactory.host.accel import choose_guest_accel
from imagefactory.host.appliance import fast_appliance
from imagefactory.inspection import inspect_image
from imagefactory.profiles import load_profile
from imagefactory.vocab import RootPolicy


class GuestInspector:
    """An :class:`~imagefactory.verify.pipeline.Inspector` backed by libguestfs."""

    def __init__(self, accel: str, accel_cache: Path, appliance_dir: Path | None = None) -> None:
        self.accel = accel
        self.accel_cache = accel_cache
        #: Where the fast libguestfs appliance is kept; ``None``: libguestfs's own.
        self.appliance_dir = appliance_dir

    def _appliance(self) -> Path | None:
        return None if self.appliance_dir is None else fast_appliance(self.appliance_dir)

    def __call__(
        self,
        disk: Path,
        disk_format: str,
        labels: Mapping[str, Any],
        disk_fd: int | None = None,
    ) -> dict[str, Any]:
        audit = labels.get("audit") or {}
        trust = labels.get("trust") or {}
        try:
            profile = load_profile(str(audit.get("profile")))
            root_policy = RootPolicy(str(trust.get("root_policy")))
        except (ImageFactoryError, ValueError) as exc:
            raise InspectionError(
                f"the labels name no profile or root policy this host knows: {exc}"
            ) from exc
        found = inspect_image(
            disk,
            profile,
            declared_format=disk_format,
            root_policy=root_policy,
            accel=lambda: choose_guest_accel(self.accel, self.accel_cache),
            appliance=self._appliance,
            # verify's digest step checked the sha256 of these very bytes (the same
            # descriptor): a second pass, at sha512's speed, would add nothing.
            hash_disk=False,
            disk_fd=disk_fd,
        )
        return {
            "disk.boot_mode": found.boot_mode,
            "os.distro": found.os.distro,
            "os.version": found.os.version,
            "os.arch": found.os.arch,
            "os.kernel": found.os.kernel,
            "trust.contextualisation": found.os.contextualisation,
            "packages.count": found.packages.summary()["count"],
            "packages.manifest_sha256": found.packages.summary()["manifest_sha256"],
            "audit.passed": found.audit.passed,
        }
