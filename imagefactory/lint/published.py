"""What a recipe changes against the version of its image a catalog publishes now.

The published side is what the catalog signed: the descriptor's labels and
the image's SBOM (fetched by the caller, checked against the descriptor's
length and digests; the disk is never downloaded). The recipe's side is
what lint can know without building: the labels the recipe decides, and the
packages the build asks apt for (the recipe's and the boot essentials; the
SBOM marks exactly these ``requested``). Dependencies and the versions of
unpinned packages come from the archive on the day of the build and are not
predicted; a pinned package (``name=version``) is compared by version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagefactory.lint import ERROR, WARNING, Finding, LintResult
from imagefactory.lint.debversion import compare_versions
from imagefactory.sbom import REQUESTED, SbomPackage

#: Labels that differ on every build, not a change a reviewer decides.
_PER_BUILD = frozenset({"image.created", "image.expires"})


@dataclass(frozen=True)
class PublishedImage:
    """The newest version of an image a catalog offers, as it signed it."""

    catalog: str
    version: str
    labels: dict[str, Any]
    #: The SBOM's packages; ``None`` when the catalog carries no SBOM for the image.
    packages: dict[str, SbomPackage] | None
    published: str = ""


@dataclass(frozen=True)
class LabelChange:
    label: str
    old: str | None
    new: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class VersionChange:
    package: str
    old: str
    new: str
    change: str  # upgraded, downgraded

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "old": self.old, "new": self.new, "change": self.change}


@dataclass
class CatalogDiff:
    """The recipe against the published version of its image (``published`` None: new image)."""

    catalog: str
    published: PublishedImage | None
    labels: list[LabelChange] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    versions: list[VersionChange] = field(default_factory=list)
    #: Requested packages in both, unpinned: the build installs the archive's current version.
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.labels or self.added or self.removed or self.versions)

    def to_dict(self) -> dict[str, Any]:
        published = self.published
        return {
            "catalog": self.catalog,
            "published": None
            if published is None
            else {
                "version": published.version,
                "published": published.published,
                "sbom": published.packages is not None,
            },
            "labels": [c.to_dict() for c in self.labels],
            "packages": {
                "added": self.added,
                "removed": self.removed,
                "versions": [v.to_dict() for v in self.versions],
                "unchanged": self.unchanged,
            },
        }


def _flatten(labels: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        elif isinstance(value, list):
            out[path] = ", ".join(map(str, value))
        elif value is not None:
            out[path] = str(value)
    return out


def _lifetime_days(labels: dict[str, Any]) -> str | None:
    image = labels.get("image")
    if not isinstance(image, dict):
        return None
    try:
        created = datetime.fromisoformat(str(image["created"]).replace("Z", "+00:00"))
        expires = datetime.fromisoformat(str(image["expires"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return f"{round((expires - created).total_seconds() / 86400)}d"


def label_changes(predicted: dict[str, Any], published: dict[str, Any]) -> list[LabelChange]:
    """Every label the recipe decides whose value differs from the published one."""
    new = {k: v for k, v in _flatten(predicted).items() if k not in _PER_BUILD}
    old_all = _flatten(published)
    changes = []
    for key in sorted(new):
        if old_all.get(key) != new[key]:
            changes.append(LabelChange(key, old_all.get(key), new[key]))
    # Free-form labels the recipe no longer sets.
    for key in sorted(k for k in old_all if k.startswith("extra.") and k not in new):
        changes.append(LabelChange(key, old_all[key], None))
    old_life, new_life = _lifetime_days(published), _lifetime_days(predicted)
    if old_life != new_life:
        changes.append(LabelChange("image.lifetime", old_life, new_life))
    return changes


def compare(
    catalog: str,
    predicted: dict[str, Any],
    requested: list[str],
    published: PublishedImage | None,
    version_key: Callable[[str], Any],
) -> tuple[CatalogDiff, list[Finding]]:
    """The diff of a recipe (its predicted labels and requested packages) to ``published``.

    ``version_key`` orders image versions as the catalog and the sites do.
    """
    diff = CatalogDiff(catalog, published)
    if published is None:
        return diff, []
    diff.labels = label_changes(predicted, published.labels)
    findings = _version_findings(str(predicted["image"]["version"]), published, version_key)
    if published.packages is None:
        findings.append(
            Finding(
                WARNING,
                "catalog-no-sbom",
                f"{catalog}: version {published.version} has no SBOM in the catalog;"
                " the package diff is missing",
            )
        )
        return diff, findings
    if not any(p.role for p in published.packages.values()):
        findings.append(
            Finding(
                WARNING,
                "catalog-sbom-no-roles",
                f"{catalog}: the SBOM of version {published.version} marks no package's role"
                " (imagefactory:role); the requested packages cannot be compared",
            )
        )
        return diff, findings
    wanted = dict(_split(p) for p in requested)
    before = {n: p for n, p in published.packages.items() if p.role == REQUESTED}
    diff.added = sorted(set(wanted) - set(before))
    diff.removed = sorted(set(before) - set(wanted))
    for name in sorted(set(wanted) & set(before)):
        pin, old = wanted[name], before[name].version
        if pin is None or pin == old:
            if pin is None:
                diff.unchanged.append(name)
            continue
        change = "upgraded" if compare_versions(pin, old) > 0 else "downgraded"
        diff.versions.append(VersionChange(name, old, pin, change))
    return diff, findings


def _split(package: str) -> tuple[str, str | None]:
    name, eq, version = package.partition("=")
    return name, (version if eq else None)


def _version_findings(
    version: str, published: PublishedImage, version_key: Callable[[str], Any]
) -> list[Finding]:
    if version == published.version:
        return [
            Finding(
                ERROR,
                "catalog-version-published",
                f"version {version} is already published; a published version is immutable"
                " and publish refuses another build under it: raise 'version'",
            )
        ]
    if version_key(version) < version_key(published.version):
        return [
            Finding(
                ERROR,
                "catalog-version-lower",
                f"version {version} is lower than the published {published.version}; sites"
                " never go back to a lower version (below-minimum-version): raise 'version'",
            )
        ]
    return []


def apply(
    result: LintResult,
    catalog: str,
    published: PublishedImage | None,
    version_key: Callable[[str], Any],
) -> None:
    """Add the diff against ``published`` (and its findings) to a valid recipe's ``result``."""
    if result.labels is None or result.requested is None:
        return
    diff, findings = compare(catalog, result.labels, result.requested, published, version_key)
    result.catalog = diff
    result.findings += findings
