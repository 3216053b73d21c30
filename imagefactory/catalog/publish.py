"""``publish``: put a signed image directory into a catalog.

The image's files are copied beside the catalog (``images/<vo>/<name>/<version>/``)
while they are hashed -- the descriptor names the digests of the bytes that
were copied, not of a file that may have changed since (the disk's sha256;
its sha512 is the labelled one, bound to those bytes by the sha256 check,
see :func:`_disk_hashes`) -- and the copy
appears under its final name in one rename. Then, under the catalog lock, the
descriptor becomes a target of the VO's role (or of top-level targets when
the VO has no role of its own), and a new snapshot and timestamp are written.

A published version is immutable: the same name and version with other bytes
is refused, the same bytes again is a no-op. A revoked version cannot come
back.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import Signer

from imagefactory.catalog.descriptor import (
    NAME_RE,
    VERSION_RE,
    VO_RE,
    Descriptor,
    FileEntry,
    image_prefix,
    parse_descriptor,
    target_path,
)
from imagefactory.catalog.repo import Catalog, Transaction, vo_role
from imagefactory.catalog.versions import version_key
from imagefactory.digest import CHUNK, ProgressFn
from imagefactory.errors import CatalogError
from imagefactory.fsutil import fsync_dir, is_disk_full
from imagefactory.model.imagedir import (
    AUDIT_NAME,
    LABELS_NAME,
    SBOM_NAME,
    ImageDir,
    load_image_dir,
)

if TYPE_CHECKING:
    from imagefactory.oci.registry import Pushed

KIND_BY_NAME = {LABELS_NAME: "labels", SBOM_NAME: "sbom", AUDIT_NAME: "audit"}


@dataclass(frozen=True)
class Published:
    """What a publish did."""

    descriptor: Descriptor
    role: str
    #: ``False`` when the same image was already published (nothing changed).
    changed: bool


def _copy_hashing(
    source: Path,
    dest: Path,
    on_progress: ProgressFn | None,
    algorithms: tuple[str, ...] = ("sha256", "sha512"),
) -> tuple[int, dict[str, str]]:
    """Copy ``source`` to the new file ``dest``, hashing the bytes copied; (length, hex digests)."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    total = source.stat().st_size
    done = 0
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src, dest.open("xb") as out:
        while chunk := src.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
            out.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(dest, 0o644)
    return done, {name: h.hexdigest() for name, h in hashes.items()}


def _disk_hashes(copied: dict[str, str], labels: dict[str, Any]) -> dict[str, str]:
    """The disk's descriptor hashes: the sha256 of the bytes copied, and the sha512
    labels.json records for the disk with that sha256.

    Sound without hashing the disk in sha512 (a second pass's worth of CPU,
    sha512 having no instructions where sha256 has them): labels.json records
    both digests from one pass over one file (``labels.make.disk_digests``),
    signing refuses labels whose sha256 or sha512 is not the disk's
    (``attest.sign``), and the copy's sha256 must equal the labelled one
    (checked by the caller before anything is published), so the sha512 names
    those same bytes unless sha256 collides. The sha256 is what binds the
    bytes for every reader (a site's pull checks it alone, see
    ``store.pull._streamed_hashes``); the sha512 serves HEPiX image lists, and
    one that was edited after signing can only make such a client refuse the
    download, never accept other bytes. A sha512 that is not 128 hex digits
    is refused here.
    """
    sha512 = labels.get("sha512")
    if not isinstance(sha512, str) or not re.fullmatch(r"[0-9a-f]{128}", sha512):
        raise CatalogError(
            "labels.json records no sha512 of the disk (128 hex digits)",
            code="catalog-digest-mismatch",
            hint="label the image again (imagefactory build or image label)",
        )
    return {"sha256": copied["sha256"], "sha512": sha512}


def _vo_of(labels: dict[str, object], vo: str | None) -> str:
    vos = labels.get("vo")
    names = [v for v in vos if isinstance(v, str)] if isinstance(vos, list) else []
    if vo is None:
        if len(names) != 1:
            raise CatalogError(
                f"the image is for VOs {names}; say which VO's role publishes it (--vo)",
                code="catalog-usage",
            )
        vo = names[0]
    if vo not in names or not VO_RE.fullmatch(vo):
        raise CatalogError(f"the image's labels are not for VO {vo!r} (they name {names})")
    return vo


def publish(
    catalog: Catalog,
    image_dir: Path,
    *,
    vo: str | None = None,
    signers: list[Signer] | None = None,
    on_progress: ProgressFn | None = None,
    oci: dict[str, str] | None = None,
    oci_referrers: list[str] | None = None,
) -> Published:
    """Publish the signed image directory ``image_dir`` into ``catalog``.

    ``signers`` sign the VO's delegated role (the VO's own keys); a VO without
    a role is signed by the catalog's top-level targets key. ``oci`` maps file
    names to OCI references (``registry/repo@sha256:...``) of a push already done
    (``manifest``: the disk manifest), ``oci_referrers`` the referrer manifests' digests.
    """
    image = load_image_dir(image_dir)
    if not image.attestations():
        raise CatalogError(
            f"{image_dir}: no attestation; sign the image before publishing it",
            code="catalog-unsigned",
            hint="imagefactory sign IMAGE-DIR --key KEY",
        )
    labels = image.labels
    meta = labels.get("image") if isinstance(labels.get("image"), dict) else {}
    name, version = meta.get("name"), meta.get("version")  # type: ignore[union-attr]
    if not (isinstance(name, str) and NAME_RE.fullmatch(name)) or not (
        isinstance(version, str) and VERSION_RE.fullmatch(version)
    ):
        raise CatalogError(f"{image_dir}: labels.json names no valid image name and version")
    vo = _vo_of(labels, vo)
    path = target_path(vo, name, version)
    prefix = image_prefix(vo, name, version)
    files = [*image.subjects(), *image.attestations()]
    with catalog.transaction({vo_role(vo): list(signers or [])}) as tx:
        for item in tx.catalog.revoked(tx.state):
            if (item.get("vo"), item.get("name"), item.get("version")) == (vo, name, version):
                raise CatalogError(
                    f"{name} {version} ({vo}) was revoked ({item.get('reason')}); publish a new"
                    " version",
                    code="catalog-revoked",
                )
        final = catalog.directory / prefix
        existing = _published(tx, vo, path)
        if existing is not None and _same_content(existing, image):
            # The same labels (which sign the disk's digest) and SBOM: nothing to do, and
            # no disk copied. A new signature of the same statement does not change it.
            return Published(existing, tx.role_for(vo)[0], changed=False)
        _mkdirs(final.parent)
        staging = Path(tempfile.mkdtemp(prefix=f"staging-{name}-", dir=_mkdirs(catalog.tmp_dir)))
        try:
            entries = _stage(
                image,
                files,
                staging=staging,
                prefix=prefix,
                oci=oci or {},
                on_progress=on_progress,
            )
            disk_labels = labels["disk"]
            disk_entry = entries[0]
            if disk_labels.get("sha256") != disk_entry.hashes["sha256"] or disk_labels.get(
                "size"
            ) not in (None, disk_entry.length):
                raise CatalogError(
                    f"{image.disk}: its digest or size is not the one labels.json signs;"
                    " the image directory changed after it was labelled",
                    code="catalog-digest-mismatch",
                )
            role, role_md = tx.role_for(vo)
            older = [
                p.rsplit("/", 1)[1].removesuffix(".json")
                for p in role_md.signed.targets
                if p.startswith(f"{vo}/{name}/")
            ]
            older = [v for v in older if version_key(v) < version_key(version)]
            descriptor = Descriptor(
                name=name,
                version=version,
                vo=vo,
                disk_format=image.declared_format,
                files=tuple(entries),
                labels=labels,
                expires=str(meta.get("expires", "")),  # type: ignore[union-attr]
                published=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                supersedes=max(older, key=version_key) if older else None,
                oci_manifest=(oci or {}).get("manifest"),
                extra={"oci_referrers": oci_referrers} if oci_referrers else {},
            )
            if existing is not None:
                raise CatalogError(
                    f"{name} {version} ({vo}) is already published with other content;"
                    " a published version is immutable",
                    code="catalog-immutable",
                )
            if final.exists():
                # Left by a publish that was killed before its commit: never served.
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_dir(final.parent)
            tx.add_target(role, path, descriptor.to_bytes(), descriptor.selection())
            return Published(descriptor, role, changed=True)
        except OSError as exc:
            if is_disk_full(exc):
                raise CatalogError(
                    f"{catalog.directory}: no space left while publishing {name} {version}"
                    f" ({exc.strerror}); the catalog is unchanged",
                    code="catalog-disk-full",
                ) from exc
            raise CatalogError(f"cannot publish {name} {version}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _stage(
    image: ImageDir,
    files: list[Path],
    *,
    staging: Path,
    prefix: str,
    oci: dict[str, str],
    on_progress: ProgressFn | None,
) -> list[FileEntry]:
    """Copy ``files`` into ``staging`` while hashing them; their descriptor entries."""
    entries = []
    for source in files:
        is_disk = source == image.disk
        if is_disk:
            length, copied = _copy_hashing(
                source, staging / source.name, on_progress, algorithms=("sha256",)
            )
            hashes = _disk_hashes(copied, image.labels["disk"])
        else:
            length, hashes = _copy_hashing(source, staging / source.name, None)
        kind = "disk" if is_disk else KIND_BY_NAME.get(source.name, "attestation")
        entries.append(
            FileEntry(
                source.name, length, hashes, f"{prefix}/{source.name}", kind, oci.get(source.name)
            )
        )
    return entries


def _same_content(existing: Descriptor, image: ImageDir) -> bool:
    """Whether ``image`` has the labels, SBOM and audit the published ``existing`` has."""
    kinds = ("labels", "sbom", "audit")
    want = {f.kind: f.hashes["sha256"] for f in existing.files if f.kind in kinds}
    have = {
        "labels": hashlib.sha256(image.labels_path.read_bytes()).hexdigest(),
        "sbom": hashlib.sha256(image.sbom.read_bytes()).hexdigest(),
        "audit": hashlib.sha256(image.audit.read_bytes()).hexdigest(),
    }
    return want == have


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _published(tx: Transaction, vo: str, path: str) -> Descriptor | None:
    """The descriptor already at ``path`` (in top-level targets or the VO's own role)."""
    places = [tx.state.targets]
    if tx.state.has_role(vo_role(vo)):
        places.append(tx.state.roles[vo_role(vo)])
    for md in places:
        info = md.signed.targets.get(path)
        if info is not None:
            return parse_descriptor(tx.catalog.read_target(info), path)
    return None


def publish_with_registry(
    catalog: Catalog,
    image_dir: Path,
    registry: str,
    *,
    vo: str | None = None,
    signers: list[Signer] | None = None,
    on_progress: ProgressFn | None = None,
) -> tuple[Published, Pushed]:
    """Push the image to ``registry`` (``HOST/PROJECT``; repository ``HOST/PROJECT/NAME``),
    then publish it with every digest of the push in its descriptor."""
    from imagefactory.oci.registry import Registry, push_image

    image = load_image_dir(image_dir)
    if not image.attestations():
        raise CatalogError(
            f"{image_dir}: no attestation; sign the image before publishing it",
            code="catalog-unsigned",
        )
    name = image.labels.get("image", {}).get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CatalogError(f"{image_dir}: labels.json names no valid image name")
    pushed = push_image(image, Registry(f"{registry.rstrip('/')}/{name}"))
    published = publish(
        catalog,
        image_dir,
        vo=vo,
        signers=signers,
        on_progress=on_progress,
        oci=pushed.oci_refs(),
        oci_referrers=pushed.referrers,
    )
    return published, pushed
