"""Small, real image directories (imagefactory/model/imagedir.py) for sign/verify/gate tests.

The disk is a raw file of a few KiB (or a qcow2 made by qemu-img when the test
asks), labels.json carries its real digests, sbom.cdx.json is a tiny valid
CycloneDX document. Tests change one thing at a time.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagefactory.attest.keys import generate_key, load_signer
from imagefactory.attest.sign import sign_with_key

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ISSUER = "https://issuer.example"
OTHER_ISSUER = "https://other-issuer.example"
IDENTITY = "ci@atlas.example"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def sbom_bytes() -> bytes:
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "components": [{"type": "library", "name": "bash", "version": "5.2.15-2+b7"}],
    }
    return json.dumps(doc, indent=2).encode()


def disk_bytes(seed: str = "disk") -> bytes:
    """A raw disk of 64 KiB: an MBR-like boot sector pattern, no other format's magic."""
    block = hashlib.sha256(seed.encode()).digest() * 2048
    return block[:65536]


def labels_for(disk: Path, sbom: Path, fmt: str = "raw") -> dict[str, Any]:
    data = disk.read_bytes()
    return {
        "schema": "urn:imagefactory:labels:v1",
        "image": {
            "name": "atlas-wn-debian12",
            "version": "1.0",
            "uuid": str(uuid.UUID(int=1)),
            "created": _time(NOW - timedelta(days=1)),
            "expires": _time(NOW + timedelta(days=29)),
        },
        "disk": {
            "file": disk.name,
            "format": fmt,
            "size": len(data),
            "virtual_size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha512": hashlib.sha512(data).hexdigest(),
            "boot_mode": "bios",
        },
        "os": {
            "distro": "debian",
            "version": "12",
            "codename": "bookworm",
            "arch": "x86_64",
            "kernel": "6.1.0-28-amd64",
        },
        "vo": ["atlas"],
        "trust": {
            "model": "non-persistent",
            "root_policy": "none",
            "fs_access": ["nfs"],
            "contextualisation": "none",
        },
        "endorser": {"contact": "atlas-images@example.org"},
        "packages": {"count": 1, "manifest_sha256": "0" * 64, "patch_date": "2026-11-20"},
        "sbom": {
            "file": sbom.name,
            "format": "CycloneDX",
            "spec_version": "1.6",
            "sha256": hashlib.sha256(sbom.read_bytes()).hexdigest(),
        },
        "audit": {
            "profile": "worker-node-default",
            "profile_version": "1",
            "profile_digest": "sha256:" + "0" * 64,
            "warnings": [],
            "passed": True,
            "checks": 31,
            "failed": [],
            "summary": {"pass": 31, "fail": 0, "warn": 0},
        },
        "recipe": {"name": "atlas-wn-debian12", "version": "1.0", "digest": "sha256:" + "0" * 64},
        "builder": {"imagefactory": "0.1.0", "libguestfs": "1.48.6"},
        "extra": {},
    }


LabelsEdit = Callable[[dict[str, Any]], None]


def make_image(
    root: Path,
    name: str = "image",
    *,
    edit: LabelsEdit | None = None,
    disk: bytes | None = None,
    qcow2: bool = False,
) -> Path:
    """An image directory under ``root``; ``edit`` changes the labels before writing."""
    directory = root / name
    directory.mkdir(parents=True)
    sbom = directory / "sbom.cdx.json"
    sbom.write_bytes(sbom_bytes())
    (directory / "audit.json").write_text(
        json.dumps({"profile": "worker-node-default", "passed": True, "checks": []}) + "\n"
    )
    if qcow2:
        disk_path = directory / "atlas-wn-debian12-1.0.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(disk_path), "16M"], check=True
        )
        fmt = "qcow2"
    else:
        disk_path = directory / "atlas-wn-debian12-1.0.raw"
        disk_path.write_bytes(disk if disk is not None else disk_bytes(name))
        fmt = "raw"
    labels = labels_for(disk_path, sbom, fmt)
    if edit is not None:
        edit(labels)
    write_labels(directory, labels)
    return directory


def write_labels(directory: Path, labels: dict[str, Any]) -> None:
    (directory / "labels.json").write_text(json.dumps(labels, indent=2), encoding="utf-8")


def read_labels(directory: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
    return value


def new_key(root: Path, name: str) -> Path:
    """A fresh key pair ``root/name`` and ``root/name.pub``; returns the private key's path."""
    return generate_key(root / name).private


def key_sign(image: Path, key: Path) -> Path:
    # Tests sign hostile labels on purpose, to see what verify does with them.
    return sign_with_key(image, load_signer(str(key)), check_labels=False).path


def write_policy(path: Path, vos: dict[str, Any], **top: Any) -> Path:
    """A policy file: ``vos`` as given (signers referring to files next to ``path``)."""
    import yaml

    path.write_text(yaml.safe_dump({**top, "vos": vos}, sort_keys=False), encoding="utf-8")
    return path


def key_signer(name: str, key: Path) -> dict[str, Any]:
    return {"name": name, "key": str(key) + ".pub"}


def vo_rules(*signers: dict[str, Any], **rules: Any) -> dict[str, Any]:
    return {"signers": list(signers), **rules}
