"""The site's view of a catalog: a TUF refresh against a pinned root, then the images.

:class:`CatalogClient` runs python-tuf's ngclient over our own transport (same
timeouts and redirect rules as the disk downloads). Every TUF refusal becomes
a :class:`~imagefactory.errors.CatalogRefusedError` whose ``code`` names the
attack it stopped:

* ``catalog-rollback``       -- a lower timestamp / snapshot / role version than trusted;
* ``catalog-expired``        -- expired metadata (a mirror freezing the catalog);
* ``catalog-mix-and-match``  -- metadata that is not the version or bytes the snapshot
  or timestamp names;
* ``catalog-replay``         -- the trusted timestamp version again with other bytes;
* ``catalog-bad-signature``  -- not signed by the keys the root (or the delegating role) names;
* ``catalog-oversized``      -- metadata larger than its limit.

The list of images comes from the roles ngclient verified (it persists each
in the site's metadata directory); each image is then looked up with
``get_targetinfo``, which applies the delegations, so an entry a VO's role
lists for another VO's path is not found and is refused
(``catalog-unauthorised-role``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import parse

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from imagefactory.catalog.descriptor import (
    NAME_RE,
    VERSION_RE,
    VO_RE,
    Descriptor,
    parse_descriptor,
)
from imagefactory.catalog.repo import REVOKED_TARGET
from imagefactory.errors import CatalogError, CatalogRefusedError, TransportError
from imagefactory.store.transport import Source

log = logging.getLogger(__name__)

#: Metadata size limits: generous for 1,000s of images, far below "fill the disk".
TIMESTAMP_MAX = 16 * 1024
SNAPSHOT_MAX = 4 * 1024 * 1024
TARGETS_MAX = 16 * 1024 * 1024
ROOT_MAX = 512 * 1024
LIMITS = (TIMESTAMP_MAX, SNAPSHOT_MAX, TARGETS_MAX, ROOT_MAX)


class _Fetcher(FetcherInterface):
    """ngclient's fetcher over :class:`Source`; remembers the last timestamp bytes."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.timestamp_bytes: bytes | None = None
        self.fetched_bytes = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            chunks, _ = self.source.open_url(url)
        except TransportError as exc:
            if exc.code == "transport-not-found":
                raise tuf_errors.DownloadHTTPError(exc.message, 404) from exc
            raise tuf_errors.DownloadError(exc.message) from exc
        return self._counted(url, chunks)

    def _counted(self, url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        data = bytearray() if url.endswith("/timestamp.json") else None
        try:
            for chunk in chunks:
                self.fetched_bytes += len(chunk)
                if data is not None:
                    data += chunk
                yield chunk
        except TransportError as exc:
            raise tuf_errors.DownloadError(exc.message) from exc
        if data is not None:
            self.timestamp_bytes = bytes(data)


def _refused(exc: Exception, what: str) -> CatalogError:
    """Our error for a TUF (or transport) failure while doing ``what``."""
    cause = exc.__cause__
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        # The cap is either a configured limit (oversized) or the signed length (another file).
        limit = str(exc).rsplit(" ", 1)[-1]
        if limit.isdigit() and int(limit) in LIMITS:
            return CatalogRefusedError(
                f"{what}: metadata larger than its limit ({exc})", code="catalog-oversized"
            )
        return CatalogRefusedError(
            f"{what}: not the length the catalog signed ({exc}): mix-and-match or tampering",
            code="catalog-mix-and-match",
        )
    if isinstance(cause, TransportError):
        return CatalogError(f"{what}: {cause.message}", code=cause.code)
    message = f"{what}: {exc}"
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return CatalogRefusedError(
            message + " (a mirror may be withholding updates: freeze)", code="catalog-expired"
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        text = str(exc)
        if text.startswith(("New timestamp version", "New snapshot version")) or (
            text.startswith("Expected ") and ".json version" in text
        ):
            return CatalogRefusedError(message + " (rollback)", code="catalog-rollback")
        return CatalogRefusedError(message + " (mix-and-match)", code="catalog-mix-and-match")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return CatalogRefusedError(
            message + " (not the bytes the catalog signed: mix-and-match or tampering)",
            code="catalog-mix-and-match",
        )
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return CatalogRefusedError(message, code="catalog-bad-signature")
    if isinstance(exc, tuf_errors.DownloadError):
        return CatalogError(message, code="catalog-download")
    return CatalogRefusedError(message, code="catalog-invalid")


@dataclass
class Offer:
    """An image the catalog offers: its verified target; the descriptor once fetched.

    ``vo``, ``name`` and ``version`` come from the target path, ``custom``
    from the signed target, so a site selects before it downloads any
    descriptor; :meth:`CatalogClient.descriptor` fetches one.
    """

    role: str
    info: TargetFile
    vo: str
    name: str
    version: str
    descriptor: Descriptor | None = None

    @property
    def custom(self) -> dict[str, Any]:
        value = self.info.custom
        return dict(value) if isinstance(value, dict) else {}

    @property
    def key(self) -> str:
        """``vo/name/version``: where it goes in the store."""
        return f"{self.vo}/{self.name}/{self.version}"

    @property
    def expires(self) -> str:
        return str(self.custom.get("expires", ""))


@dataclass
class Refresh:
    """The result of one refresh: the offers and what was refused, with reasons."""

    offers: list[Offer] = field(default_factory=list)
    revoked: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (path, code, message)
    metadata_bytes: int = 0


class CatalogClient:
    """A site's TUF client for one catalog, with its trusted state in ``state_dir``."""

    def __init__(self, source: Source, root: bytes, state_dir: Path) -> None:
        self.source = source
        self.metadata_dir = state_dir / "metadata"
        self.targets_dir = state_dir / "descriptors"
        for d in (self.metadata_dir, self.targets_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fetcher = _Fetcher(source)
        config = UpdaterConfig(
            root_max_length=ROOT_MAX,
            timestamp_max_length=TIMESTAMP_MAX,
            snapshot_max_length=SNAPSHOT_MAX,
            targets_max_length=TARGETS_MAX,
        )
        base = self._base()
        # The pinned root bootstraps trust the first time; afterwards the trusted local root.
        bootstrap = None if (self.metadata_dir / "root.json").exists() else root
        if bootstrap is None:
            self._check_pinned(root)
        try:
            self.updater = Updater(
                str(self.metadata_dir),
                base + "metadata/",
                str(self.targets_dir),
                base + "targets/",
                fetcher=self.fetcher,
                config=config,
                bootstrap=bootstrap,
            )
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise CatalogError(f"the pinned root is not valid TUF root metadata: {exc}") from exc

    def _base(self) -> str:
        if self.source.is_http:
            return self.source.base + "/"
        return Path(self.source.base).as_uri() + "/"

    def _check_pinned(self, root: bytes) -> None:
        """The pinned root must be the trusted one or an older one it descends from."""
        try:
            pinned = Metadata[Any].from_bytes(root)
            trusted = Metadata[Any].from_bytes((self.metadata_dir / "root.json").read_bytes())
        except Exception as exc:
            raise CatalogError(f"the pinned root cannot be read: {exc}") from exc
        if pinned.signed.version > trusted.signed.version or (
            pinned.signed.version == trusted.signed.version
            and pinned.signed.to_dict() != trusted.signed.to_dict()
        ):
            raise CatalogError(
                "the pinned root is not the root this store already trusts;"
                " a store follows one catalog",
                code="catalog-other-root",
            )

    def refresh(self, vos: set[str] | None = None) -> Refresh:
        """Refresh the metadata and list the images the catalog offers.

        With ``vos``, only those VOs' delegated roles are fetched (a site
        downloads the metadata of the VOs it runs, not of the whole catalog).
        """
        previous = self._trusted_timestamp()
        try:
            self.updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _refused(exc, "catalog refresh") from exc
        self._check_replay(previous)
        result = Refresh()
        targets = self._persisted("targets")
        paths: list[tuple[str, str]] = [
            ("targets", p) for p in targets.signed.targets if p != REVOKED_TARGET
        ]
        delegations = targets.signed.delegations
        for delegated in delegations.roles.values() if delegations and delegations.roles else ():
            vo = delegated.name.removeprefix("vo.")
            if vos is not None and vo not in vos:
                continue
            listed = self._load_role(delegated.name, vo, result)
            paths += [(delegated.name, p) for p in listed]
        if REVOKED_TARGET in targets.signed.targets:
            result.revoked = self._revoked()
        seen: set[str] = set()
        for role, path in paths:
            if vos is not None and path.split("/", 1)[0] not in vos:
                continue
            if path not in seen:
                seen.add(path)
                self._offer(role, path, result)
        result.metadata_bytes = self.fetcher.fetched_bytes
        return result

    def _trusted_timestamp(self) -> bytes | None:
        path = self.metadata_dir / "timestamp.json"
        return path.read_bytes() if path.exists() else None

    def _check_replay(self, previous: bytes | None) -> None:
        served = self.fetcher.timestamp_bytes
        if previous is None or served is None or served == previous:
            return
        try:
            old = Metadata[Any].from_bytes(previous).signed.version
            new = Metadata[Any].from_bytes(served).signed.version
        except Exception:  # ngclient already refused unreadable bytes
            return
        if old == new:
            raise CatalogRefusedError(
                f"catalog refresh: timestamp version {new} served again with other bytes"
                " (replay); keeping the trusted state",
                code="catalog-replay",
            )

    def trusted(self, role: str) -> Metadata[Any]:
        """The metadata of ``role`` ngclient verified and persisted in the last refresh."""
        path = self.metadata_dir / f"{parse.quote(role, '')}.json"
        md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
        return md

    def _persisted(self, role: str) -> Metadata[Targets]:
        path = self.metadata_dir / f"{parse.quote(role, '')}.json"
        md: Metadata[Targets] = Metadata.from_bytes(path.read_bytes())
        return md

    def _load_role(self, role: str, vo: str, result: Refresh) -> list[str]:
        """Make ngclient load and verify ``role`` (a probe lookup), then read what it verified."""
        probe = f"{vo}/-/-.json"
        try:
            self.updater.get_targetinfo(probe)
        except tuf_errors.RepositoryError as exc:
            if "does not contain information" in str(exc) or "is not part of snapshot" in str(exc):
                # Delegated, but the VO has not published yet: the signed snapshot lists no
                # metadata for the role, so it has no targets.
                return []
            raise _refused(exc, f"catalog role {role}") from exc
        except tuf_errors.DownloadError as exc:
            raise _refused(exc, f"catalog role {role}") from exc
        return list(self._persisted(role).signed.targets)

    def _revoked(self) -> list[dict[str, Any]]:
        data = self._download(REVOKED_TARGET)
        if data is None:
            return []
        items = json.loads(data).get("revoked", [])
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _download(self, path: str) -> bytes | None:
        try:
            info = self.updater.get_targetinfo(path)
            if info is None:
                return None
            local = self.updater.find_cached_target(info) or self.updater.download_target(info)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _refused(exc, f"catalog target {path}") from exc
        return Path(local).read_bytes()

    def _offer(self, role: str, path: str, result: Refresh) -> None:
        try:
            info = self.updater.get_targetinfo(path)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            error = _refused(exc, f"catalog target {path}")
            result.refused.append((path, error.code, error.message))
            return
        if info is None:
            result.refused.append(
                (
                    path,
                    "catalog-unauthorised-role",
                    f"{path}: listed by role {role}, which is not delegated that path; ignored",
                )
            )
            return
        parts = path.removesuffix(".json").split("/")
        custom = info.custom if isinstance(info.custom, dict) else {}
        if (
            len(parts) != 3
            or not path.endswith(".json")
            or not (VO_RE.fullmatch(parts[0]) and NAME_RE.fullmatch(parts[1]))
            or not VERSION_RE.fullmatch(parts[2])
            or [custom.get("vo"), custom.get("name"), custom.get("version")] != parts
        ):
            result.refused.append(
                (
                    path,
                    "descriptor-name-mismatch",
                    f"{path}: its signed labels name {custom.get('vo')}/{custom.get('name')}"
                    f" {custom.get('version')}: an image served under another image's name",
                )
            )
            return
        result.offers.append(Offer(role, info, parts[0], parts[1], parts[2]))

    def descriptor(self, offer: Offer) -> Descriptor:
        """Fetch (or reuse) and check ``offer``'s descriptor; raises :class:`CatalogError`."""
        if offer.descriptor is None:
            path = offer.info.path
            try:
                local = self.updater.find_cached_target(offer.info)
                local = local or self.updater.download_target(offer.info)
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
                raise _refused(exc, f"catalog target {path}") from exc
            offer.descriptor = parse_descriptor(Path(local).read_bytes(), path)
        return offer.descriptor
