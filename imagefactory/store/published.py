"""The version of an image a catalog publishes now: its signed labels and its SBOM.

For ``lint --catalog``: a TUF refresh against the pinned root (as ``pull``
does, in a private, throw-away state directory, so lint never changes a
site's trusted state), then, per wanted image, the newest version offered and
not revoked, its descriptor (TUF-checked) and its SBOM file, downloaded
capped at the length the descriptor signs and checked against its digests.
The disk is never downloaded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagefactory.catalog.descriptor import Descriptor
from imagefactory.catalog.versions import version_key
from imagefactory.errors import CatalogError, InputError
from imagefactory.store.transport import DEFAULT_TIMEOUT, Source, download
from imagefactory.store.updater import CatalogClient

#: An SBOM read for a diff: a worker node's is well under a MiB; refuse a silly one unread.
MAX_SBOM_BYTES = 64 * 1024 * 1024

#: The root a local catalog directory is trusted from without ``--root``: its first
#: root, from which TUF checks every root rotation up to the newest.
LOCAL_ROOT = "metadata/1.root.json"


@dataclass(frozen=True)
class PublishedVersion:
    """What the catalog signed about the newest version of one image."""

    descriptor: Descriptor
    #: The SBOM's bytes, checked against the descriptor; ``None`` if it lists none.
    sbom: bytes | None


def local_root(catalog: str) -> Path:
    """The root a catalog directory is read with when no ``--root`` is pinned."""
    if "://" in catalog:
        raise InputError(
            f"{catalog}: a catalog URL needs --root ROOT.json (its root metadata, pinned)",
            hint="get the catalog's metadata/root.json out of band, as a site does for pull",
        )
    return Path(catalog) / LOCAL_ROOT


def latest_published(
    catalog: str,
    root: bytes,
    images: set[tuple[str, str]],
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[tuple[str, str], PublishedVersion]:
    """The newest published, unrevoked version of each ``(vo, name)`` the catalog offers."""
    source = Source.parse(catalog, timeout)
    with tempfile.TemporaryDirectory(prefix="imagefactory-lint-") as state:
        client = CatalogClient(source, root, Path(state))
        refresh = client.refresh({vo for vo, _ in images})
        revoked = {(r.get("vo"), r.get("name"), r.get("version")) for r in refresh.revoked}
        newest: dict[tuple[str, str], str] = {}
        offers = {}
        for offer in refresh.offers:
            key = (offer.vo, offer.name)
            if key not in images or (offer.vo, offer.name, offer.version) in revoked:
                continue
            if key not in newest or version_key(offer.version) > version_key(newest[key]):
                newest[key], offers[key] = offer.version, offer
        out = {}
        for key, offer in sorted(offers.items()):
            descriptor = client.descriptor(offer)
            out[key] = PublishedVersion(descriptor, _sbom(source, descriptor, Path(state)))
        return out


def _sbom(source: Source, descriptor: Descriptor, state: Path) -> bytes | None:
    entries = [f for f in descriptor.files if f.kind == "sbom"]
    if not entries:
        return None
    entry = entries[0]
    if entry.length > MAX_SBOM_BYTES:
        raise CatalogError(
            f"{source.url(entry.path)}: the catalog signs an SBOM of {entry.length} bytes,"
            f" more than the {MAX_SBOM_BYTES} lint reads",
            code="catalog-sbom-too-large",
        )
    dest = state / "sbom.part"
    download(source, entry.path, dest, entry.length, hashes=dict(entry.hashes))
    data = dest.read_bytes()
    dest.unlink()
    return data
