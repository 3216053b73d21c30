"""Lint: a VO's recipe reviewed as a merge request would need it.

:func:`lint_recipe` reports, without building anything, running anything or
reading anything outside the recipe's own directory (the recipe is hostile
input from a merge request): the recipe's schema and composition problems
(every one, at file:line:column, as ``validate``); what the site's trust
policy would refuse about the image it makes (VO, base, model, root policy,
lifetime); and the labels the image will declare. :mod:`.report` renders
the result as text, a merge-request comment (markdown) or JSON.

With a catalog (``--catalog``), :mod:`.published` compares the recipe with
the version of its image the catalog publishes now: labels changed, requested
packages added, removed, re-pinned; from the catalog's signed labels and the
image's SBOM, never the disk (the caller fetches and verifies them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefactory.builder.element import install_list
from imagefactory.errors import Diagnostic, DiagnosticsError
from imagefactory.labels.make import repository_labels
from imagefactory.recipe import BuildLimits, Recipe, load_recipe
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.labels import check_labels

if TYPE_CHECKING:
    from imagefactory.lint.published import CatalogDiff

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One thing a reviewer must know: a problem in the recipe or a policy refusal."""

    severity: str
    code: str
    message: str
    where: str | None = None  # file:line:column, for recipe problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "where": self.where,
        }


@dataclass
class LintResult:
    """What lint found about one recipe."""

    recipe: Path
    findings: list[Finding] = field(default_factory=list)
    #: The labels the image will declare (what the recipe decides), if it is valid.
    labels: dict[str, Any] | None = None
    digest: str | None = None
    #: The packages the build asks apt for (boot essentials and the recipe's), if it is valid.
    requested: list[str] | None = None
    #: Against the version the catalog publishes now, with ``--catalog``.
    catalog: CatalogDiff | None = None

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": str(self.recipe),
            "ok": self.ok,
            "digest": self.digest,
            "findings": [f.to_dict() for f in self.findings],
            "labels": self.labels,
            "requested": self.requested,
            "catalog": None if self.catalog is None else self.catalog.to_dict(),
        }


def predicted_labels(recipe: Recipe, now: datetime) -> dict[str, Any]:
    """The declared part of the labels a build of ``recipe`` at ``now`` will carry.

    Observed fields (kernel, packages, digests) come from the built image and
    are not predicted; the audit is assumed to pass (the build fails if not).
    """
    created = now.replace(microsecond=0)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    labels: dict[str, Any] = {
        "image": {
            "name": recipe.name,
            "version": recipe.version,
            "created": created.strftime(stamp),
            "expires": (created + timedelta(days=recipe.expiry_days)).strftime(stamp),
        },
        "os": {
            "distro": str(recipe.base.distro),
            "version": recipe.base.version,
            "codename": recipe.base.release,
            "arch": str(recipe.base.arch),
        },
        "vo": [recipe.vo],
        "trust": {
            "model": str(recipe.model),
            "root_policy": str(recipe.root_policy),
            "fs_access": [str(a) for a in recipe.fs_access],
        },
        "endorser": {"contact": recipe.endorser},
        "audit": {"profile": recipe.hardening, "passed": True},
        "extra": dict(sorted(recipe.labels.items())),
    }
    if recipe.repositories:
        labels["repositories"] = repository_labels(recipe)
    return labels


def _diagnostic(d: Diagnostic) -> Finding:
    message = f"{d.path or '.'}: {d.message}" + (f" ({d.hint})" if d.hint else "")
    return Finding(ERROR, "recipe-invalid", message, f"{d.file}:{d.line}:{d.column}")


def lint_recipe(
    path: Path,
    limits: BuildLimits,
    policy: TrustPolicy | None = None,
    now: datetime | None = None,
) -> LintResult:
    """Lint the recipe at ``path`` against the host's limits and, if given, a trust policy."""
    result = LintResult(path)
    try:
        recipe = load_recipe(path, limits)
    except DiagnosticsError as exc:
        result.findings = [_diagnostic(d) for d in exc.diagnostics]
        return result
    now = now or datetime.now(UTC)
    labels = predicted_labels(recipe, now)
    result.labels, result.digest = labels, recipe.digest
    result.requested = install_list(recipe)
    if policy is not None:
        result.findings += policy_findings(recipe, labels, policy, now)
    return result


def policy_findings(
    recipe: Recipe, labels: dict[str, Any], policy: TrustPolicy, now: datetime
) -> list[Finding]:
    """What ``policy`` would refuse about the image ``recipe`` makes, or warn of."""
    vo = policy.vos.get(recipe.vo)
    if vo is None:
        known = ", ".join(sorted(policy.vos)) or "none"
        return [
            Finding(
                ERROR,
                "vo-unknown",
                f"the site policy {policy.source} does not know VO {recipe.vo!r} (known: {known})",
            )
        ]
    out = [Finding(ERROR, reason.code, reason.message) for reason in check_labels(labels, vo, now)]
    if vo.max_age_days is not None and recipe.expiry_days > vo.max_age_days:
        out.append(
            Finding(
                WARNING,
                "outlives-max-age",
                f"VO {vo.name}: the image expires after {recipe.expiry_days} days, but this site"
                f" stops booting images older than {vo.max_age_days} days",
            )
        )
    if not vo.signers:
        out.append(Finding(WARNING, "no-signers", f"VO {vo.name}: the policy trusts no signer"))
    return out
