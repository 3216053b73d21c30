"""OCI 1.1 manifests for an image directory, built here byte for byte.

One image manifest per disk (DISTRIBUTION.md): a vendor ``artifactType``,
``config`` = labels.json, exactly one layer = the disk as it is at rest
(``application/x-qemu-disk`` for qcow2), with the layer annotations EGI's sync
tools read and the manifest annotations of :func:`oci_annotations`. Each
attestation and the SBOM is a referrer: an artifact manifest whose ``subject``
is the disk manifest and whose one layer is the file. Registries without the
referrers API get the fallback tag ``sha256-<hex of the subject>``, an index
listing the referrers.

Manifests are serialised once (:func:`canonical`) and pushed as those bytes,
so their digests are known before the push and checked after it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from imagefactory.labels.exports import oci_annotations
from imagefactory.model.imagedir import AUDIT_NAME
from imagefactory.model.labels import Labels
from imagefactory.vocab import Arch

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT_TYPE = "application/vnd.imagefactory.disk.v1"
CONFIG_TYPE = "application/vnd.imagefactory.labels.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
DISK_TYPES = {"qcow2": "application/x-qemu-disk", "raw": "application/vnd.imagefactory.disk.raw"}
REFERRER_TYPES = {
    "sigstore": "application/vnd.dev.sigstore.bundle.v0.3+json",
    "dsse": "application/vnd.dsse.envelope.v1+json",
    "sbom": "application/vnd.cyclonedx+json",
    "audit": "application/vnd.imagefactory.audit.v1+json",
}


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A blob descriptor: media type, digest, size (and a title annotation)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def _glance_arch(arch: str) -> str:
    """Glance's name of a label's arch (``i386`` is ``i686`` there); others as they are."""
    try:
        return Arch(arch).glance
    except ValueError:
        return arch


def disk_layer_annotations(labels: dict[str, Any], file_name: str) -> dict[str, str]:
    """The layer annotations EGI's registry sync reads (plus the standard title)."""
    os_ = labels["os"]
    return {
        "org.opencontainers.image.title": file_name,
        "eu.egi.cloud.tag": str(labels["image"]["version"]),
        "org.openstack.glance.disk_format": str(labels["disk"]["format"]),
        "org.openstack.glance.container_format": "bare",
        "org.openstack.glance.architecture": _glance_arch(str(os_["arch"])),
        "org.openstack.glance.os_distro": str(os_["distro"]),
        "org.openstack.glance.os_version": str(os_["version"]),
    }


def disk_manifest(labels: dict[str, Any], config: Blob, disk: Blob) -> bytes:
    """The disk's image manifest (labels as config, the disk as its one layer)."""
    annotations = oci_annotations(Labels.from_dict(labels))
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": config.to_dict(),
            "layers": [disk.to_dict()],
            "annotations": annotations,
        }
    )


def referrer_manifest(artifact_type: str, subject: Blob, layer: Blob) -> bytes:
    """An artifact manifest for ``layer`` (an attestation or the SBOM) about ``subject``."""
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": digest_of(EMPTY), "size": len(EMPTY)},
            "layers": [layer.to_dict()],
            "subject": subject.to_dict(),
        }
    )


def referrers_index(
    referrers: list[tuple[Blob, str]], present: list[dict[str, Any]] | None = None
) -> bytes:
    """The fallback-tag index: ``present`` entries (kept, in order), then each new referrer.

    A referrer already listed (same digest) is not listed twice.
    """
    manifests = list(present or [])
    seen = {m.get("digest") for m in manifests}
    for blob, artifact_type in referrers:
        if blob.digest in seen:
            continue
        entry = blob.to_dict()
        entry["artifactType"] = artifact_type
        manifests.append(entry)
        seen.add(blob.digest)
    return canonical({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})


def fallback_tag(subject_digest: str) -> str:
    """The referrers fallback tag of a manifest digest (OCI distribution spec 1.1)."""
    algo, _, hexpart = subject_digest.partition(":")
    return f"{algo}-{hexpart}"


def referrer_type(file_name: str) -> str:
    if file_name.endswith(".sigstore.json"):
        return REFERRER_TYPES["sigstore"]
    if file_name.endswith(".dsse.json"):
        return REFERRER_TYPES["dsse"]
    if file_name == AUDIT_NAME:
        return REFERRER_TYPES["audit"]
    return REFERRER_TYPES["sbom"]
