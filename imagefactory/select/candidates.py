"""The images of the store as ``select`` sees them: their facts, and whether they may be used.

For each image directory of the store (:meth:`Store.installed`), from local
files only, never hashing a disk:

1. ``labels-unreadable`` -- labels.json cannot be read, or lacks a field a
   requirement, a rank or an adaptor reads;
2. ``not-installed``     -- the store's pull state has no record of it (copied in
   by hand, or left by a killed pull): not an image pull verified;
3. ``revoked``           -- in the signed revocation list of the last pull
   (:mod:`imagefactory.store.revoked`); ``revocations-unreadable`` if that list
   cannot be read: then nothing can be shown not to be revoked; ``retired`` --
   pull kept it only for the instances made over it (:mod:`imagefactory.store.layout`);
4. ``expired``/``too-old`` -- the signed expiry has passed, or the VO's maximum age;
5. ``not-in-policy``/``policy-refused`` -- the site policy has no rules for a VO
   the labels name, or its rules refuse the labels (distro, release, arch,
   model, root policy, audit, format) -- the same checks verify makes;
6. ``not-verified``      -- no verified-cache entry under the current policy
   for the image's files as they are now (``lstat`` of each: the verified
   cache's key): changed since pull verified it, or the policy changed.

An image with none of these is a candidate. Steps 1-3 (:func:`read_images`)
read labels.json and the store's state, which the requirements need anyway;
steps 4-6 (:class:`Checks`: the policy's rules, and the verified cache, which
stats every file of the image) run only where they can change the answer,
unless every image is to be explained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from imagefactory.errors import FileAccessError, ImageFactoryError
from imagefactory.model.imagedir import LABELS_NAME, parse_json_object, read_small
from imagefactory.model.reason import Reason, printable, register_codes
from imagefactory.select.requirements import KEYS
from imagefactory.store.layout import Store
from imagefactory.store.revoked import local_revocations
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.cache import VerifiedCache, image_key
from imagefactory.verify.labels import check_labels, parse_time

STEP = "select"

REASONS: Mapping[str, str] = MappingProxyType(
    {
        "labels-unreadable": "labels.json cannot be read or lacks a field select reads",
        "not-installed": "the store's pull state has no record of the image",
        "revoked": "the catalog revoked the image (as of the last pull)",
        "retired": "pull retired the image: kept only for the instances made before",
        "revocations-unreadable": "the store's revocation list cannot be read",
        "expired": "the labels' expiry has passed",
        "too-old": "the image is older than the VO's maximum age",
        "not-in-policy": "the site policy has no rules for a VO the labels name",
        "policy-refused": "the site policy's rules refuse the labels",
        "not-verified": "no verified-cache entry for the image's current files under this policy",
        "no-match": "a requirement does not hold for the image",
        "outranked": "valid and matching, but another image ranks higher",
    }
)
register_codes(REASONS)

#: Labels read besides the requirement keys: for ranks and adaptors.
_EXTRA_FIELDS = {
    "image.created": str,
    "image.expires": str,
    "disk.size": int,
    "disk.virtual_size": int,
    "disk.sha256": str,
    "os.codename": str,
}


#: Every label select reads, and its JSON type.
_FIELDS: dict[str, type] = {
    **{k.label: (list if k.many else str) for k in KEYS.values()},
    **_EXTRA_FIELDS,
}


@dataclass
class Image:
    """One image directory of the store: its facts, and what stops it being used."""

    key: str
    path: Path
    #: Label path (``os.arch``) -> value, for every field select reads; empty if unreadable.
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[Reason] = field(default_factory=list)
    #: The parsed labels.json (what the policy's checks read), once readable.
    labels: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def created(self) -> datetime | None:
        return parse_time(self.facts.get("image.created"))

    @property
    def expires(self) -> datetime | None:
        return parse_time(self.facts.get("image.expires"))

    def deny(self, code: str, message: str) -> None:
        self.problems.append(Reason(code, STEP, message))


def read_images(store: Store) -> list[Image]:
    """Every image directory of ``store``, sorted by key, with its problems of steps 1-3.

    Steps 4-6 are :class:`Checks`, which the caller runs where they matter.
    """
    if not store.directory.is_dir():
        raise FileAccessError(
            f"{store.directory}: cannot read the image store: no such directory",
        )
    installed: set[str] = set()
    retired: dict[str, dict[str, object]] = {}
    state_problem: str | None = None
    try:
        if store.state_dir.exists():
            state = store.load_state()
            installed, retired = set(state.images), state.retired
    except ImageFactoryError as exc:
        state_problem = exc.message
    except OSError as exc:  # a private state directory of another user: no answer
        raise FileAccessError.from_os_error(store.state_dir, "read the pull state", exc) from exc
    revocations = local_revocations(store)
    images = []
    # Every version directory, so that one without labels.json is named
    # (labels-unreadable) rather than silently left out of --explain.
    for key, path in sorted(store.version_dirs().items()):
        image = Image(key, path)
        images.append(image)
        if not _read_facts(image):
            continue
        if state_problem is not None:
            image.deny("not-installed", state_problem)
        elif key not in installed:
            image.deny(
                "not-installed",
                "the store's pull state has no record of it: not an image pull installed",
            )
        if key in retired:
            why = retired[key]
            text = f"retired at {why.get('since')} ({why.get('code')}: {why.get('reason')})"
            image.deny("retired", printable(text))
        if revocations.problem is not None:
            image.deny("revocations-unreadable", revocations.problem)
        elif key in revocations.reasons:
            image.deny("revoked", f"revoked: {printable(revocations.reasons[key])}")
    return images


class Checks:
    """Steps 4-6, for the images whose answer they can change (or all, to explain them).

    One load of the verified cache serves every image checked.
    """

    def __init__(self, cache: VerifiedCache, policy: TrustPolicy, now: datetime) -> None:
        self.entries = cache.load()
        self.policy = policy
        self.now = now

    def check(self, image: Image) -> bool:
        """Whether ``image`` may be used; if not, its problems say why."""
        if image.usable:
            _check_policy(image, self.policy, self.now)
        if not image.usable:
            return False
        found = image_key(image.path, self.policy)
        if found is not None and VerifiedCache.lookup_in(self.entries, found, self.now):
            return True
        image.deny(
            "not-verified",
            "no verified-cache entry for its files as they are now under this policy"
            " (changed since pull verified it, or the policy changed); the next pull"
            " verifies it again",
        )
        return False


def _read_facts(image: Image) -> bool:
    """Fill ``image.facts`` from labels.json; ``False`` (with the problem) if unreadable."""
    path = image.path / LABELS_NAME
    try:
        labels = parse_json_object(read_small(path, LABELS_NAME), path, LABELS_NAME)
    except (ImageFactoryError, OSError) as exc:
        message = exc.message if isinstance(exc, ImageFactoryError) else f"{path}: {exc}"
        image.deny("labels-unreadable", message)
        return False
    for dotted, kind in _FIELDS.items():
        value = _at(labels, dotted)
        good = isinstance(value, kind) and not isinstance(value, bool)
        if good and kind is list:
            good = bool(value) and all(isinstance(v, str) for v in value)
        if not good:
            image.deny(
                "labels-unreadable",
                f"{path}: {dotted} is {printable(repr(value)[:60])}, expected a"
                f" {'list of strings' if kind is list else kind.__name__}",
            )
            return False
        image.facts[dotted] = tuple(value) if kind is list else value
    image.labels = labels
    return True


def _at(labels: dict[str, Any], dotted: str) -> Any:
    value: Any = labels
    for part in dotted.split("."):
        if type(value) is not dict:  # parsed JSON: a dict exactly (faster than an ABC check)
            return None
        value = value.get(part)
    return value


def _check_policy(image: Image, policy: TrustPolicy, now: datetime) -> None:
    """The site policy's own checks on the labels (what verify's labels step refuses)."""
    facts = image.facts
    expires = image.expires
    if expires is None or expires <= now:
        shown = expires.isoformat() if expires else printable(repr(facts.get("image.expires")))
        image.deny("expired", f"expired {shown}")
    if facts["disk.format"] not in {str(f) for f in policy.formats}:
        allowed = ", ".join(sorted(str(f) for f in policy.formats))
        image.deny(
            "policy-refused", f"disk format {facts['disk.format']!r} not in the policy's {allowed}"
        )
    for vo_name in facts["vo"]:
        vo = policy.vos.get(vo_name)
        if vo is None:
            known = ", ".join(sorted(policy.vos)) or "none"
            image.deny("not-in-policy", f"VO {printable(vo_name)!r} is not in the policy ({known})")
            continue
        for reason in check_labels(image.labels, vo, now):
            if reason.code == "expired":
                continue  # said above, once, whatever the VO
            code = "too-old" if reason.code == "too-old" else "policy-refused"
            image.deny(code, printable(reason.message))
