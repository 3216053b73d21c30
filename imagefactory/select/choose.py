"""Choose the best usable image of the store for a requirement, and say why for every image.

:func:`select_image` reads the store (:mod:`imagefactory.select.candidates`),
matches every usable image against the requirements, ranks the matching ones
and explains each image: ``chosen``, ``outranked`` by the chosen one (and
by what), ``no-match`` (each requirement that failed, with the image's
value), or ``refused`` (why it may not be used at all). It reads only the
store and the site policy, never the network.

Ranks (:class:`Rank`), each ending in a deterministic tie-break, the image's
key (``vo/name/version``) in ascending order:

* ``newest``   -- latest ``image.created``, then highest version;
* ``version``  -- highest image version (``1.10`` above ``1.9``), then newest;
* ``release``  -- highest distribution release (``24.04`` above ``22.04``), then newest;
* ``smallest`` -- smallest disk file, then newest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagefactory.catalog.versions import version_key
from imagefactory.model.reason import Reason
from imagefactory.select.candidates import STEP, Checks, Image, read_images
from imagefactory.select.ranks import Rank
from imagefactory.select.requirements import Requirements, release_key
from imagefactory.store.layout import STATE_DIR, Store
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.cache import VerifiedCache

#: Where pull keeps the verified cache of a store (``pull`` writes it, select reads it).
STORE_CACHE = Path(STATE_DIR) / "verify-cache"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: (what it compares, key function, highest first?) from most to least significant.
_Order = list[tuple[str, Callable[[Image], Any], bool]]


def _created(image: Image) -> datetime:
    return image.created or _EPOCH


def _version(image: Image) -> Any:
    return version_key(str(image.facts.get("image.version", "")))


def _release(image: Image) -> Any:
    return release_key(str(image.facts.get("os.version", ""))) or ()


def _size(image: Image) -> int:
    return int(image.facts.get("disk.size", 0))


_ORDERS: dict[Rank, _Order] = {
    Rank.NEWEST: [("created", _created, True), ("version", _version, True)],
    Rank.VERSION: [("version", _version, True), ("created", _created, True)],
    Rank.RELEASE: [("release", _release, True), ("created", _created, True)],
    Rank.SMALLEST: [("disk size", _size, False), ("created", _created, True)],
}
_SHOWN: dict[str, Callable[[Image], str]] = {
    "created": lambda i: str(i.facts.get("image.created")),
    "version": lambda i: str(i.facts.get("image.version")),
    "release": lambda i: str(i.facts.get("os.version")),
    "disk size": lambda i: f"{_size(i)} bytes",
}


def rank_images(images: list[Image], rank: Rank) -> list[Image]:
    """``images`` best first under ``rank``; ties broken by key, ascending."""
    ordered = sorted(images, key=lambda i: i.key)
    for _what, keyfn, highest_first in reversed(_ORDERS[rank]):
        ordered.sort(key=keyfn, reverse=highest_first)  # stable: earlier orders break ties
    return ordered


@dataclass
class Explanation:
    """Why one image of the store was or was not chosen."""

    key: str
    path: Path
    #: ``chosen``, ``outranked``, ``no-match`` or ``refused``.
    status: str
    reasons: list[Reason] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.key,
            "path": str(self.path),
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
        }

    def render(self) -> str:
        head = f"{self.key}: {self.status}"
        return "\n".join([head, *(f"  {r.render()}" for r in self.reasons)])


@dataclass
class Selection:
    """The answer of ``select``: the chosen image (or none) and every image's explanation."""

    store: Path
    requirements: Requirements
    rank: Rank
    chosen: Image | None
    explanations: list[Explanation]

    @property
    def ok(self) -> bool:
        return self.chosen is not None


def select_image(
    store_dir: Path,
    policy: TrustPolicy,
    requirements: Requirements,
    rank: Rank = Rank.NEWEST,
    *,
    cache_dir: Path | None = None,
    now: datetime | None = None,
    explain: bool = True,
) -> Selection:
    """Choose from ``store_dir``; ``cache_dir`` defaults to the store's own verified cache.

    With ``explain``, every image is checked completely, so each explanation
    names all that stops it. Without, the policy and verified-cache checks run
    only on matching images, in rank order until one passes: the same choice,
    and images ranked below it are only "outranked", those that do not match
    only "no-match".
    """
    store = Store(store_dir)
    cache = VerifiedCache(cache_dir if cache_dir is not None else store.directory / STORE_CACHE)
    moment = now or datetime.now(UTC)
    images = read_images(store)
    checks = Checks(cache, policy, moment)
    explained: dict[str, Explanation] = {}
    matching: list[Image] = []
    for image in images:
        failures = requirements.failures(image.facts) if image.usable else []
        if image.usable and explain:
            checks.check(image)
        if not image.usable:
            explained[image.key] = Explanation(image.key, image.path, "refused", image.problems)
        elif failures:
            reasons = [Reason("no-match", STEP, f) for f in failures]
            explained[image.key] = Explanation(image.key, image.path, "no-match", reasons)
        else:
            matching.append(image)
    ordered = rank_images(matching, rank)
    chosen: Image | None = None
    below: list[Image] = []
    for image in ordered:
        if chosen is not None:
            below.append(image)
        elif explain or checks.check(image):
            chosen = image
        else:
            explained[image.key] = Explanation(image.key, image.path, "refused", image.problems)
    if chosen is not None:
        explained[chosen.key] = Explanation(chosen.key, chosen.path, "chosen")
        for position, image in enumerate(below, start=2):
            message = f"#{position} by {rank}: {_outranked(image, chosen, rank)}"
            reasons = [Reason("outranked", STEP, message)]
            explained[image.key] = Explanation(image.key, image.path, "outranked", reasons)
    return Selection(
        store.directory,
        requirements,
        rank,
        chosen,
        [explained[i.key] for i in images],
    )


def _outranked(image: Image, chosen: Image, rank: Rank) -> str:
    """What puts ``chosen`` ahead of ``image``: the first order where they differ."""
    for what, keyfn, _highest in _ORDERS[rank]:
        if keyfn(image) != keyfn(chosen):
            show = _SHOWN[what]
            return f"{what} {show(image)}; {chosen.key} has {show(chosen)}"
    return f"a tie; {chosen.key} comes first by name"
