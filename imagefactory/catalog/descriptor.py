"""The image descriptor: the small signed JSON document a catalog holds per image.

A descriptor is a TUF target (``<vo>/<name>/<version>.json``); the disk is
not. It names every file of the image directory with its length and digests,
where each one lives (a path beside the catalog, relative to the catalog's
root, and optionally an OCI reference by digest), the labels, expiry and the
version it supersedes. A site trusts the descriptor because TUF verified it,
and trusts each file it downloads because its length and digests match.

Parsing is strict: a descriptor is untrusted bytes until its target hashes
matched, and even then its names end up in file paths, so they must be plain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from imagefactory.errors import CatalogError

SCHEMA = "urn:imagefactory:catalog-descriptor:v1"

#: A descriptor is a few KiB (labels included); anything larger is refused unread.
MAX_DESCRIPTOR_BYTES = 1024 * 1024

#: Image names, versions and VO names as the recipe allows them (see recipe/fields.py).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_RE = re.compile(r"^(?!.*\.\.)[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
VO_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}

#: The labels a site selects by, copied into the TUF target's ``custom``.
SELECT_KEYS = ("name", "version", "vo", "distro", "release", "arch", "format", "model")


#: What a file of an image directory is, as a descriptor names it.
FILE_KINDS = ("disk", "labels", "sbom", "audit", "attestation")


@dataclass(frozen=True)
class FileEntry:
    """One file of the image directory as the descriptor signs it."""

    name: str
    length: int
    hashes: dict[str, str]
    #: Where it lives, relative to the catalog's root (``images/<vo>/<name>/<version>/<file>``).
    path: str
    #: The role of the file: one of :data:`FILE_KINDS`.
    kind: str
    #: ``registry/repository@sha256:...`` when the file is also in an OCI registry.
    oci: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "length": self.length,
            "hashes": dict(self.hashes),
            "path": self.path,
        }
        if self.oci is not None:
            out["oci"] = self.oci
        return out


@dataclass(frozen=True)
class Descriptor:
    """An image as the catalog describes it."""

    name: str
    version: str
    vo: str
    disk_format: str
    files: tuple[FileEntry, ...]
    labels: dict[str, Any]
    expires: str
    published: str
    supersedes: str | None = None
    #: The OCI manifest of the disk, ``registry/repository@sha256:...``, when pushed.
    oci_manifest: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target_path(self) -> str:
        return target_path(self.vo, self.name, self.version)

    @property
    def disk(self) -> FileEntry:
        return next(f for f in self.files if f.kind == "disk")

    def selection(self) -> dict[str, Any]:
        """The labels a site selects by (the TUF target's ``custom``)."""
        os_ = self.labels.get("os", {})
        trust = self.labels.get("trust", {})
        return {
            "name": self.name,
            "version": self.version,
            "vo": self.vo,
            "distro": os_.get("distro"),
            "release": os_.get("version"),
            "codename": os_.get("codename"),
            "arch": os_.get("arch"),
            "format": self.disk_format,
            "model": trust.get("model"),
            "root_policy": trust.get("root_policy"),
            "expires": self.expires,
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "vo": self.vo,
            "format": self.disk_format,
            "expires": self.expires,
            "published": self.published,
            "supersedes": self.supersedes,
            "files": [f.to_dict() for f in self.files],
            "labels": self.labels,
        }
        if self.oci_manifest is not None:
            out["oci_manifest"] = self.oci_manifest
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()


def target_path(vo: str, name: str, version: str) -> str:
    """The TUF target path of an image's descriptor."""
    return f"{vo}/{name}/{version}.json"


def _str(data: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise CatalogError(
            f"descriptor: {key!r} is missing or invalid: {value!r}", code="descriptor"
        )
    return value


def _file(item: Any, prefix: str) -> FileEntry:
    if not isinstance(item, dict):
        raise CatalogError("descriptor: a files entry is not an object", code="descriptor")
    name = _str(item, "name", FILE_RE)
    kind = _str(item, "kind")
    if kind not in FILE_KINDS:
        raise CatalogError(f"descriptor: {name}: unknown kind {kind!r}", code="descriptor")
    length = item.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise CatalogError(f"descriptor: {name}: invalid length {length!r}", code="descriptor")
    hashes = item.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise CatalogError(f"descriptor: {name}: no sha256", code="descriptor")
    for algo, value in hashes.items():
        if algo not in _HEX or not isinstance(value, str) or not _HEX[algo].fullmatch(value):
            raise CatalogError(f"descriptor: {name}: invalid {algo} digest", code="descriptor")
    path = _str(item, "path")
    if path != f"{prefix}/{name}":
        raise CatalogError(
            f"descriptor: {name}: path {path!r} is not {prefix}/{name}", code="descriptor"
        )
    oci = item.get("oci")
    if oci is not None and not isinstance(oci, str):
        raise CatalogError(f"descriptor: {name}: invalid oci reference", code="descriptor")
    return FileEntry(name, length, dict(hashes), path, kind, oci)


def image_prefix(vo: str, name: str, version: str) -> str:
    """Where an image's files live, relative to the catalog's root."""
    return f"images/{vo}/{name}/{version}"


def parse_descriptor(data: bytes, expected_path: str) -> Descriptor:
    """Parse and check a descriptor fetched as the target ``expected_path``.

    The descriptor must describe exactly the image its target path names (a
    descriptor of another image served under this name is refused), and its
    labels must name the same image, VO and disk.
    """
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise CatalogError(f"descriptor {expected_path}: larger than {MAX_DESCRIPTOR_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(
            f"descriptor {expected_path}: not JSON: {exc}", code="descriptor"
        ) from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CatalogError(
            f"descriptor {expected_path}: not a {SCHEMA} document", code="descriptor"
        )
    name = _str(doc, "name", NAME_RE)
    version = _str(doc, "version", VERSION_RE)
    vo = _str(doc, "vo", VO_RE)
    if target_path(vo, name, version) != expected_path:
        raise CatalogError(
            f"descriptor {expected_path} describes {target_path(vo, name, version)}:"
            " an image served under another image's name",
            code="descriptor-name-mismatch",
        )
    files_raw = doc.get("files")
    if not isinstance(files_raw, list):
        raise CatalogError(f"descriptor {expected_path}: no files", code="descriptor")
    prefix = image_prefix(vo, name, version)
    files = tuple(_file(item, prefix) for item in files_raw)
    kinds = [f.kind for f in files]
    names = [f.name for f in files]
    if kinds.count("disk") != 1 or kinds.count("labels") != 1 or len(set(names)) != len(names):
        raise CatalogError(
            f"descriptor {expected_path}: needs one disk, one labels.json, unique names",
            code="descriptor",
        )
    labels = doc.get("labels")
    if not isinstance(labels, dict):
        raise CatalogError(f"descriptor {expected_path}: no labels", code="descriptor")
    desc = Descriptor(
        name=name,
        version=version,
        vo=vo,
        disk_format=_str(doc, "format"),
        files=files,
        labels=labels,
        expires=_str(doc, "expires"),
        published=_str(doc, "published"),
        supersedes=doc.get("supersedes") if isinstance(doc.get("supersedes"), str) else None,
        oci_manifest=doc.get("oci_manifest") if isinstance(doc.get("oci_manifest"), str) else None,
    )
    _check_labels(desc, expected_path)
    return desc


def _section(labels: dict[str, Any], key: str) -> dict[str, Any]:
    value = labels.get(key)
    return value if isinstance(value, dict) else {}


def _check_labels(desc: Descriptor, where: str) -> None:
    labels = desc.labels
    image: dict[str, Any] = _section(labels, "image")
    disk: dict[str, Any] = _section(labels, "disk")
    vos = labels.get("vo")
    if not isinstance(vos, list):
        vos = []
    problems = []
    if image.get("name") != desc.name or image.get("version") != desc.version:
        problems.append(f"its labels name {image.get('name')!r} {image.get('version')!r}")
    if desc.vo not in vos:
        problems.append(f"its labels are for VOs {vos!r}, not {desc.vo!r}")
    entry = desc.disk
    if disk.get("file") != entry.name or disk.get("sha256") != entry.hashes.get("sha256"):
        problems.append("its labels name another disk file or digest")
    if disk.get("format") != desc.disk_format:
        problems.append("its labels name another disk format")
    if problems:
        raise CatalogError(
            f"descriptor {where}: " + "; ".join(problems), code="descriptor-name-mismatch"
        )
