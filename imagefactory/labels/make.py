"""Build labels.json from what was observed in the image and what the recipe declares.

Observed (read from the image or the disk file): OS, architecture, kernel,
packages, patch date, disk format and sizes and digests, boot mode,
contextualisation, audit. Declared and checked: VO, root policy, model, file
system access, expiry, endorser contact. Where the recipe states something the
image also shows (distribution, release, architecture), a difference is an
error, not a label.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.audit.checks import AuditReport
from imagefactory.digest import hash_file
from imagefactory.errors import LabelError
from imagefactory.fsutil import atomic_write
from imagefactory.guest.facts import OsFacts, PackageFacts
from imagefactory.model.imagedir import LABELS_NAME
from imagefactory.model.labels import Labels
from imagefactory.model.labelschema import SCHEMA_ID, validate_labels
from imagefactory.profiles import Profile
from imagefactory.recipe import Recipe
from imagefactory.sbom import SbomRef

LABELS_FILE = LABELS_NAME
#: Namespace of image UUIDs: uuid5 of the disk's sha512, so one disk has one UUID.
IMAGE_NAMESPACE = uuid.UUID("0b7f0f4e-5d0c-4d7e-9b1e-2c8f6a1d9e33")


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DiskFacts:
    """The disk file as measured on the host (after the safety check)."""

    file: str
    format: str
    size: int
    virtual_size: int
    sha256: str
    sha512: str
    boot_mode: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "size": self.size,
            "virtual_size": self.virtual_size,
            "sha256": self.sha256,
            "sha512": self.sha512,
            "boot_mode": self.boot_mode,
        }


def disk_digests(path: Path) -> tuple[str, str]:
    """sha256 and sha512 hex of a file, in one pass (:func:`imagefactory.digest.hash_file`)."""
    digests = hash_file(path, ("sha256", "sha512")).hexdigests
    return digests["sha256"], digests["sha512"]


def check_against_recipe(recipe: Recipe, facts: OsFacts) -> None:
    """Refuse an image whose observed OS differs from what the recipe asked for."""
    base = recipe.base
    wanted = {"distro": str(base.distro), "version": base.version, "arch": str(base.arch)}
    seen = {"distro": facts.distro, "version": facts.version, "arch": facts.arch}
    wrong = [
        f"{k}: recipe says {wanted[k]}, image has {seen[k]}" for k in wanted if wanted[k] != seen[k]
    ]
    if wrong:
        raise LabelError(
            f"the image is not what recipe {recipe.name} asked for: " + "; ".join(wrong),
            hint="the build produced another OS than declared; check the base and elements",
        )


def audit_summary(report: AuditReport, profile: Profile) -> dict[str, Any]:
    return {
        "profile": report.profile,
        "profile_version": report.profile_version,
        "profile_digest": profile.digest,
        "passed": report.passed,
        "checks": len(report.results),
        "failed": [r.id for r in report.results if r.status == "fail"],
        "warnings": [r.id for r in report.results if r.status == "warn"],
        "summary": report.summary(),
    }


def repository_labels(recipe: Recipe) -> list[dict[str, str]]:
    """The ``repositories`` label: each added repository's name, URL and key fingerprint."""
    return [
        {"name": r.name, "url": r.url, "fingerprint": r.fingerprint} for r in recipe.repositories
    ]


def make_labels(
    recipe: Recipe,
    *,
    disk: DiskFacts,
    os: OsFacts,
    packages: PackageFacts,
    sbom: SbomRef,
    audit: AuditReport,
    profile: Profile,
    builder: dict[str, str],
    created: dt.datetime,
) -> dict[str, Any]:
    """The labels document, checked against the recipe and the schema.

    A recipe's third-party repositories are labelled with the fingerprint of
    the one key apt in the image trusts for each (``repositories``), so a
    site's policy can say which repository keys it accepts.
    """
    check_against_recipe(recipe, os)
    labels: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "image": {
            "name": recipe.name,
            "version": recipe.version,
            "uuid": str(uuid.uuid5(IMAGE_NAMESPACE, disk.sha512)),
            "created": _stamp(created),
            "expires": _stamp(created + dt.timedelta(days=recipe.expiry_days)),
        },
        "disk": disk.to_dict(),
        "os": {
            "distro": os.distro,
            "version": os.version,
            "codename": os.codename,
            "arch": os.arch,
            "kernel": os.kernel,
        },
        "vo": [recipe.vo],
        "trust": {
            "model": str(recipe.model),
            "root_policy": str(recipe.root_policy),
            "fs_access": [str(a) for a in recipe.fs_access],
            "contextualisation": os.contextualisation,
        },
        "endorser": {"contact": recipe.endorser},
        "packages": packages.summary(),
        "sbom": sbom.to_dict(),
        "audit": audit_summary(audit, profile),
        "recipe": {"name": recipe.name, "version": recipe.version, "digest": recipe.digest},
        "builder": dict(sorted(builder.items())),
        "extra": dict(sorted(recipe.labels.items())),
    }
    if recipe.repositories:
        labels["repositories"] = repository_labels(recipe)
    validate_labels(labels)
    return labels


def write_labels(directory: Path, labels: dict[str, Any]) -> Path:
    """Write labels.json (validated first) into ``directory``."""
    return atomic_write(directory / LABELS_FILE, Labels.from_dict(labels).to_json())
