"""The signed labels against one VO's policy: what the image is, and whether it may run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from imagefactory.trust.model import VoPolicy
from imagefactory.verify.verdict import Reason
from imagefactory.vocab import WorkerNodeModel

STEP = "labels"

#: Clock skew tolerated before a creation time counts as in the future.
CLOCK_SKEW = timedelta(minutes=5)


def label(labels: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``a.b`` in the labels, or ``None``."""
    value: Any = labels
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time with a zone (``2026-11-25T09:00:00Z``), or ``None``."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def valid_until(labels: Mapping[str, Any], vo: VoPolicy, model: str | None) -> datetime | None:
    """When the labels stop satisfying ``vo`` by time alone (expiry, maximum age)."""
    limits = []
    expires = parse_time(label(labels, "image.expires"))
    if expires is not None:
        limits.append(expires)
    created = parse_time(label(labels, "image.created"))
    max_age = _max_age(vo, model)
    if created is not None and max_age is not None:
        limits.append(created + timedelta(days=max_age))
    return min(limits) if limits else None


def _max_age(vo: VoPolicy, model: str | None) -> int | None:
    if model == WorkerNodeModel.USER_DEFINED and vo.user_defined.max_age_days is not None:
        return vo.user_defined.max_age_days
    return vo.max_age_days


def check_labels(labels: Mapping[str, Any], vo: VoPolicy, now: datetime) -> list[Reason]:
    """Every way the labels break ``vo``'s rules (empty: they satisfy them)."""
    out: list[Reason] = []

    def deny(code: str, message: str) -> None:
        out.append(Reason(code, STEP, f"VO {vo.name}: {message}"))

    distro = label(labels, "os.distro")
    if distro not in {d.value for d in vo.distros}:
        deny("distro-not-allowed", f"distro {distro!r} not in {_listed(vo.distros)}")
    version, codename = label(labels, "os.version"), label(labels, "os.codename")
    if vo.releases and version not in vo.releases and codename not in vo.releases:
        deny(
            "release-not-allowed",
            f"release {version!r} ({codename!r}) not in {_listed(vo.releases)}",
        )
    arch = label(labels, "os.arch")
    if arch not in {a.value for a in vo.arches}:
        deny("arch-not-allowed", f"arch {arch!r} not in {_listed(vo.arches)}")

    model = label(labels, "trust.model")
    if model == WorkerNodeModel.USER_DEFINED:
        if not vo.user_defined.accept:
            deny("user-defined-refused", "user-defined images are not accepted")
    elif model not in {m.value for m in vo.models}:
        deny("model-not-allowed", f"model {model!r} not in {_listed(vo.models)}")
    root_policy = label(labels, "trust.root_policy")
    if model in {m.value for m in WorkerNodeModel}:
        allowed = vo.root_policies.get(WorkerNodeModel(model), frozenset())
        if root_policy not in {p.value for p in allowed}:
            deny(
                "root-policy-not-allowed",
                f"root policy {root_policy!r} not acceptable for {model} images"
                f" (allowed: {_listed(allowed)})",
            )

    _check_times(labels, vo, model, now, deny)

    repositories = label(labels, "repositories") or []
    for repo in repositories if isinstance(repositories, list) else [repositories]:
        fingerprint = repo.get("fingerprint") if isinstance(repo, Mapping) else None
        if fingerprint not in vo.repository_keys:
            name = repo.get("name") if isinstance(repo, Mapping) else repo
            deny(
                "repository-not-allowed",
                f"the image trusts repository {name!r} with key {fingerprint!r}, not one of"
                f" repository_keys {_listed(vo.repository_keys)}",
            )

    if vo.require_audit:
        passed = label(labels, "audit.passed")
        if passed is not True:
            failed = label(labels, "audit.failed")
            detail = f"; failed checks: {failed}" if failed else ""
            deny("audit-failed", f"the hardening audit did not pass (passed={passed!r}){detail}")
    return out


def _check_times(
    labels: Mapping[str, Any],
    vo: VoPolicy,
    model: Any,
    now: datetime,
    deny: Callable[[str, str], None],
) -> None:
    created_text = label(labels, "image.created")
    created = parse_time(created_text)
    if created is None:
        deny("labels-invalid", f"image.created {created_text!r} is not an RFC 3339 time")
    elif created > now + CLOCK_SKEW:
        deny("created-in-future", f"created {created.isoformat()} is in the future")
    expires_text = label(labels, "image.expires")
    expires = parse_time(expires_text)
    if expires_text is None:
        if vo.require_expiry:
            deny("no-expiry", "the labels carry no image.expires")
    elif expires is None:
        deny("labels-invalid", f"image.expires {expires_text!r} is not an RFC 3339 time")
    elif expires <= now:
        deny("expired", f"expired {expires.isoformat()}")
    max_age = _max_age(vo, model)
    if created is not None and max_age is not None and now - created > timedelta(days=max_age):
        deny("too-old", f"created {created.isoformat()}, more than {max_age} days ago")


def _listed(values: Any) -> str:
    return "[" + ", ".join(sorted(str(v) for v in values)) + "]"


def now_utc() -> datetime:
    return datetime.now(UTC)
