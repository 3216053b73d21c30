"""What the catalog page shows: the catalog as a site's TUF client verifies it.

The page is made from the same refresh a site's ``pull`` does
(:class:`~imagefactory.store.updater.CatalogClient`, against the root given,
by default the catalog's own ``metadata/root.json``): every role's signature,
version and hashes checked, delegations applied, each descriptor checked
against its signed target hashes. An entry that fails any of that is not an
image on the page; it is listed as refused, with the reason. The signer
identity comes from the attestation files the descriptor signs, read only
after their length and sha256 matched it.

Every value here is untrusted text for the page (labels come from VO recipes
and from the images); :mod:`imagefactory.page.html` escapes all of it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagefactory.attest.claims import claimed_signer
from imagefactory.catalog.descriptor import Descriptor, FileEntry
from imagefactory.catalog.versions import version_key
from imagefactory.errors import CatalogError, TransportError
from imagefactory.store.transport import Source
from imagefactory.store.updater import CatalogClient

#: Labels are flattened to ``key.path = value`` lines; a page is no place for more.
MAX_LABEL_LINES = 400
MAX_VALUE_CHARS = 2000

#: The filters, in the order the page shows them: key, title.
FILTERS = (("os", "OS"), ("arch", "Arch"), ("vo", "VO"), ("model", "Model"))

UNKNOWN = "unknown"


@dataclass(frozen=True)
class FileView:
    """One file of an image, where it is (catalog-relative) and its digests."""

    name: str
    kind: str
    length: int
    sha256: str
    sha512: str | None
    path: str
    oci: str | None


@dataclass(frozen=True)
class Audit:
    """The audit result the labels sign."""

    passed: bool | None
    summary: str
    failed: tuple[str, ...]
    profile: str | None


@dataclass
class ImageView:
    """One image version as a row of the page."""

    vo: str
    name: str
    version: str
    role: str | None
    distro: str
    release: str
    codename: str | None
    arch: str
    model: str
    root_policy: str | None
    disk_format: str | None
    expires: str | None
    published: str | None
    supersedes: str | None
    oci_manifest: str | None = None
    signers: list[str] = field(default_factory=list)
    audit: Audit | None = None
    labels: list[tuple[str, str]] = field(default_factory=list)
    files: list[FileView] = field(default_factory=list)
    #: ``None`` unless revoked: the reason from the signed revocation list.
    revoked_reason: str | None = None
    revoked_at: str | None = None
    expired: bool = False
    latest: bool = False
    superseded_by: str | None = None
    #: What the page could not confirm about this entry (an attestation that differs, ...).
    problems: list[str] = field(default_factory=list)

    @property
    def os(self) -> str:
        return f"{self.distro} {self.release}"

    @property
    def revoked(self) -> bool:
        return self.revoked_reason is not None

    @property
    def status(self) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.expired else "valid"

    def facet(self, key: str) -> str:
        """The value of filter ``key`` (see :data:`FILTERS`)."""
        return {"os": self.os, "arch": self.arch, "vo": self.vo, "model": self.model}[key]

    def file(self, kind: str) -> FileView | None:
        return next((f for f in self.files if f.kind == kind), None)


@dataclass
class CatalogView:
    """The verified catalog: its version and expiry, the images, what was refused."""

    catalog_version: int
    timestamp_expires: str
    targets_expires: str
    root_version: int
    root_sha256: str
    generated: str
    images: list[ImageView]
    #: (target path, code, message) of entries that did not verify: never shown as images.
    refused: list[tuple[str, str, str]]


def load_view(catalog_dir: Path, root: bytes, now: datetime | None = None) -> CatalogView:
    """Refresh ``catalog_dir`` as a site would, from the pinned ``root``; the page's content."""
    now = now or datetime.now(UTC)
    require_catalog(catalog_dir)
    try:
        source = Source.parse(str(catalog_dir))
    except TransportError as exc:
        raise CatalogError(exc.message, code=exc.code) from exc
    with tempfile.TemporaryDirectory(prefix="imagefactory-page-") as state:
        client = CatalogClient(source, root, Path(state))
        refresh = client.refresh()
        refused = list(refresh.refused)
        images: list[ImageView] = []
        for offer in refresh.offers:
            try:
                descriptor = client.descriptor(offer)
            except CatalogError as exc:
                refused.append((offer.info.path, exc.code, exc.message))
                continue
            images.append(_image(catalog_dir, descriptor, offer.role, now))
        timestamp = client.trusted("timestamp").signed
        targets = client.trusted("targets").signed
        trusted_root = client.trusted("root")
        root_bytes = (Path(state) / "metadata" / "root.json").read_bytes()
    _apply_revocations(images, refresh.revoked)
    _mark_versions(images)
    images.sort(key=lambda i: version_key(i.version), reverse=True)
    images.sort(key=lambda i: (i.vo, i.name))  # stable: newest version first in each image
    return CatalogView(
        catalog_version=timestamp.version,
        timestamp_expires=_iso(timestamp.expires),
        targets_expires=_iso(targets.expires),
        root_version=trusted_root.signed.version,
        root_sha256=hashlib.sha256(root_bytes).hexdigest(),
        generated=_iso(now),
        images=images,
        refused=refused,
    )


def require_catalog(catalog_dir: Path) -> None:
    """A :class:`CatalogError` naming ``catalog_dir`` unless it holds a catalog."""
    if not (catalog_dir / "metadata" / "timestamp.json").is_file():
        raise CatalogError(
            f"{catalog_dir}: not a catalog (no metadata/timestamp.json)",
            code="catalog-missing",
            hint="create one with: imagefactory catalog init DIR",
        )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: Any, default: str = UNKNOWN) -> str:
    return value if isinstance(value, str) and value else default


def _opt(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _image(catalog_dir: Path, d: Descriptor, role: str, now: datetime) -> ImageView:
    labels = d.labels
    os_ = _section(labels, "os")
    trust = _section(labels, "trust")
    view = ImageView(
        vo=d.vo,
        name=d.name,
        version=d.version,
        role=role,
        distro=_text(os_.get("distro")),
        release=_text(os_.get("version")),
        codename=_opt(os_.get("codename")),
        arch=_text(os_.get("arch")),
        model=_text(trust.get("model")),
        root_policy=_opt(trust.get("root_policy")),
        disk_format=d.disk_format,
        expires=d.expires or None,
        published=d.published,
        supersedes=d.supersedes,
        oci_manifest=d.oci_manifest or d.disk.oci,
        audit=_audit(labels.get("audit")),
        labels=flatten(labels),
        files=[_file(f) for f in d.files],
    )
    view.expired = _expired(d.expires, now, view.problems)
    for entry in d.files:
        if entry.kind != "attestation":
            continue
        data = checked_bytes(catalog_dir, entry)
        if data is None:
            view.problems.append(
                f"{entry.name}: not the file the catalog signed (missing, changed or not a file)"
            )
            view.signers.append(f"{entry.name}: unconfirmed")
            continue
        claim = claimed_signer(entry.name, data)
        view.signers.append(claim.signer if claim is not None else f"{entry.name}: unknown kind")
    return view


def _file(entry: FileEntry) -> FileView:
    return FileView(
        entry.name,
        entry.kind,
        entry.length,
        entry.hashes["sha256"],
        entry.hashes.get("sha512"),
        entry.path,
        entry.oci,
    )


def _expired(expires: str, now: datetime, problems: list[str]) -> bool:
    try:
        when = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        problems.append(f"expiry {expires!r} is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)")
        return True
    return when <= now


def _audit(value: Any) -> Audit | None:
    if not isinstance(value, dict):
        return None
    passed = value.get("passed")
    summary = value.get("summary")
    parts = []
    if isinstance(summary, dict):
        parts = [f"{k} {summary[k]}" for k in ("pass", "fail", "warn") if k in summary]
    failed = value.get("failed")
    failed_items = tuple(_scalar(f) for f in failed) if isinstance(failed, list) else ()
    return Audit(
        passed if isinstance(passed, bool) else None,
        ", ".join(parts),
        failed_items,
        _opt(value.get("profile")),
    )


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={_scalar(v)}" for k, v in sorted(value.items(), key=str))
    elif isinstance(value, list):
        text = ", ".join(_scalar(v) for v in value)
    else:
        text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def flatten(labels: dict[str, Any]) -> list[tuple[str, str]]:
    """``labels`` as ``(key.path, value)`` lines, sorted; lists of scalars on one line."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if len(out) >= MAX_LABEL_LINES:
            return
        if isinstance(value, dict) and value and depth < 6:
            for key in sorted(value, key=str):
                walk(f"{prefix}.{key}" if prefix else str(key), value[key], depth + 1)
        elif value in ([], {}, ""):
            out.append((prefix, "(none)"))
        else:
            out.append((prefix, _scalar(value)))

    walk("", labels, 0)
    return out


def checked_bytes(catalog_dir: Path, entry: FileEntry) -> bytes | None:
    """The bytes of a small catalog file, if they are the signed ones (length and sha256).

    ``entry.path`` is plain (``images/<vo>/<name>/<version>/<file>``, checked by
    the descriptor parser); a link or anything but a regular file is refused,
    and what is hashed is what was read from the one descriptor opened.
    """
    try:
        fd = os.open(catalog_dir / entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry.length:
            return None
        data = stream.read(entry.length + 1)
    if len(data) != entry.length or hashlib.sha256(data).hexdigest() != entry.hashes["sha256"]:
        return None
    return data


def _apply_revocations(images: list[ImageView], revoked: list[dict[str, Any]]) -> None:
    """Mark listed images revoked; add withdrawn ones as revoked rows (what they were)."""
    by_key = {(i.vo, i.name, i.version): i for i in images}
    for item in revoked:
        key = (_text(item.get("vo")), _text(item.get("name")), _text(item.get("version")))
        reason = _text(item.get("reason"), "(no reason given)")
        when = _opt(item.get("revoked"))
        image = by_key.get(key)
        if image is None:
            sel = _section(item, "selection")
            image = ImageView(
                vo=key[0],
                name=key[1],
                version=key[2],
                role=None,
                distro=_text(sel.get("distro")),
                release=_text(sel.get("release")),
                codename=_opt(sel.get("codename")),
                arch=_text(sel.get("arch")),
                model=_text(sel.get("model")),
                root_policy=_opt(sel.get("root_policy")),
                disk_format=_opt(sel.get("format")),
                expires=_opt(sel.get("expires")),
                published=None,
                supersedes=None,
            )
            disk = _opt(item.get("disk_sha256"))
            if disk is not None:
                image.labels = [("disk.sha256", disk)]
            images.append(image)
            by_key[key] = image
        image.revoked_reason = reason
        image.revoked_at = when


def _mark_versions(images: list[ImageView]) -> None:
    """The newest valid version of each image is ``latest``; who supersedes whom."""
    groups: dict[tuple[str, str], list[ImageView]] = {}
    for image in images:
        groups.setdefault((image.vo, image.name), []).append(image)
    for group in groups.values():
        live = [i for i in group if i.status == "valid"]
        if live:
            max(live, key=lambda i: version_key(i.version)).latest = True
        versions = {i.version: i for i in group}
        for image in group:
            older = versions.get(image.supersedes or "")
            if older is not None:
                older.superseded_by = image.version
