"""The image directory: what a build publishes and an attestation covers.

The one place its file names are defined. ``<dir>/`` holds the disk (named
by ``labels.json``'s ``disk.file``), ``labels.json``, ``sbom.cdx.json``, the
build's ``audit.json``, ``build.json`` and ``build.log``, and any number of
attestations:
``*.dsse.json`` (key-based DSSE envelopes) and ``*.sigstore.json`` (Sigstore
bundles). Every name read from ``labels.json`` is untrusted until verified, so
the disk's name must be a plain file name inside the directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.errors import EXIT_ERROR, FileAccessError, InputError
from imagefactory.vocab import DiskFormat

LABELS_NAME = "labels.json"
SBOM_NAME = "sbom.cdx.json"
AUDIT_NAME = "audit.json"
#: The build's record (inputs, versions, timings) and its log.
RECORD_NAME = "build.json"
LOG_NAME = "build.log"
DSSE_SUFFIX = ".dsse.json"
SIGSTORE_SUFFIX = ".sigstore.json"

#: labels.json, the SBOM and an attestation are small; a larger file is refused unread.
MAX_METADATA_BYTES = 16 * 1024 * 1024

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")


class LayoutError(InputError):
    """The image directory lacks a file or has an unusable one."""


class MissingImageFileError(LayoutError, FileAccessError):
    """The image directory, or a file it must hold, does not exist.

    A layout problem to verify and the gate (an image they cannot judge), and
    "cannot read a file" (exit 2) to every command, like any other.
    """

    exit_code = EXIT_ERROR


@dataclass(frozen=True)
class ImageDir:
    """The files of one image directory, with its labels parsed (not yet trusted)."""

    path: Path
    disk: Path
    labels_path: Path
    sbom: Path
    labels: dict[str, Any]
    #: The build's audit.json: every check with its evidence, attested with the rest.
    audit: Path

    @property
    def declared_format(self) -> str:
        """The disk's format as the labels declare it (checked: a :class:`DiskFormat`)."""
        return str(self.labels["disk"]["format"])

    def attestations(self) -> list[Path]:
        """Every attestation file, sorted by name."""
        return sorted(
            p
            for p in self.path.iterdir()
            if p.name.endswith((DSSE_SUFFIX, SIGSTORE_SUFFIX)) and not p.name.startswith(".")
        )

    def subjects(self) -> list[Path]:
        """The files an attestation names as its subjects, in statement order.

        audit.json is one: the labels carry only the audit's summary, and a
        site reading the evidence must know it is the evidence that was signed.
        """
        return [self.disk, self.labels_path, self.sbom, self.audit]


def read_small(path: Path, what: str) -> bytes:
    """The bytes of a small metadata file, refusing links, non-files and large files."""
    if not path.exists() and not path.is_symlink():
        raise MissingImageFileError(f"{path}: cannot read {what}: no such file")
    if path.is_symlink() or not path.is_file():
        raise LayoutError(f"{path}: {what} is not a regular file")
    with path.open("rb") as stream:
        data = stream.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise LayoutError(f"{path}: {what} is larger than {MAX_METADATA_BYTES} bytes")
    return data


def parse_json_object(data: bytes, path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser's stack, a refusal like any other.
        raise LayoutError(f"{path}: {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise LayoutError(f"{path}: {what} is not a JSON object")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        # "\ud800" parses, but is no character: nothing could sign or show it as written.
        raise LayoutError(
            f"{path}: {what} holds an escaped lone surrogate ({exc.object[exc.start]!r}),"
            " which is not a Unicode character"
        ) from exc
    return value


def load_image_dir(path: Path) -> ImageDir:
    """Read ``labels.json`` of the image directory at ``path`` and locate its files.

    Raises :class:`LayoutError` when the directory, ``labels.json``, its
    ``disk.file`` or the SBOM is missing or unusable.
    """
    path = Path(path)
    if not path.exists():
        raise MissingImageFileError(f"{path}: cannot read the image directory: no such directory")
    if not path.is_dir():
        raise LayoutError(f"{path}: not an image directory")
    labels_path = path / LABELS_NAME
    labels = parse_json_object(read_small(labels_path, LABELS_NAME), labels_path, LABELS_NAME)
    disk_info = labels.get("disk")
    name = disk_info.get("file") if isinstance(disk_info, dict) else None
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name.endswith(".json"):
        raise LayoutError(
            f"{labels_path}: disk.file must name the disk file inside the image directory"
            f" (a plain file name), found {name!r}"
        )
    fmt = disk_info.get("format") if isinstance(disk_info, dict) else None
    formats = [f.value for f in DiskFormat]
    if fmt not in formats:
        raise LayoutError(
            f"{labels_path}: disk.format must be one of {', '.join(formats)}, found {fmt!r}"
        )
    sbom = path / SBOM_NAME
    if sbom.is_symlink() or not sbom.is_file():
        raise LayoutError(f"{sbom}: the SBOM is missing or not a regular file")
    audit = path / AUDIT_NAME
    if audit.is_symlink() or not audit.is_file():
        raise LayoutError(f"{audit}: the audit report is missing or not a regular file")
    return ImageDir(path, path / name, labels_path, sbom, labels, audit)
