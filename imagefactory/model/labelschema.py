"""The labels JSON Schema and vocabularies, generated from :mod:`imagefactory.vocab`.

The files under ``labels/schema/`` and ``labels/vocab/`` are the published
form; :func:`write_files` regenerates them (``python -m imagefactory.model.labelschema``)
and a test checks they are current, so ``vocab.py`` stays the one source.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from imagefactory.data import LABELS_DIR
from imagefactory.errors import LabelError
from imagefactory.vocab import (
    Arch,
    BootMode,
    Contextualisation,
    DiskFormat,
    Distro,
    FsAccess,
    RootPolicy,
    WorkerNodeModel,
)

SCHEMA_ID = "urn:imagefactory:labels:v1"
SCHEMA_FILE = LABELS_DIR / "schema" / "labels-v1.schema.json"
VOCAB_DIR = LABELS_DIR / "vocab"
HEX64 = "^[0-9a-f]{64}$"
HEX128 = "^[0-9a-f]{128}$"
TIME = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
DATE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

VOCABULARIES: dict[str, type[StrEnum]] = {
    "distro": Distro,
    "arch": Arch,
    "root_policy": RootPolicy,
    "model": WorkerNodeModel,
    "fs_access": FsAccess,
    "format": DiskFormat,
    "boot_mode": BootMode,
    "contextualisation": Contextualisation,
}


def vocabulary(name: str) -> list[str]:
    return [member.value for member in VOCABULARIES[name]]


def _obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }


def _str(max_length: int = 256, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **extra}


def _enum(name: str) -> dict[str, Any]:
    return {"enum": vocabulary(name)}


def labels_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of labels.json, version 1."""
    name = _str(64, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    count = {"type": "integer", "minimum": 0}
    schema = _obj(
        {
            "schema": {"const": SCHEMA_ID},
            "image": _obj(
                {
                    "name": name,
                    "version": _str(64),
                    "uuid": _str(36, format="uuid"),
                    "created": _str(20, pattern=TIME),
                    "expires": _str(20, pattern=TIME),
                }
            ),
            "disk": _obj(
                {
                    "file": _str(200),
                    "format": _enum("format"),
                    "size": count,
                    "virtual_size": count,
                    "sha256": _str(64, pattern=HEX64),
                    "sha512": _str(128, pattern=HEX128),
                    "boot_mode": _enum("boot_mode"),
                }
            ),
            "os": _obj(
                {
                    "distro": _enum("distro"),
                    "version": _str(16),
                    "codename": _str(32),
                    "arch": _enum("arch"),
                    "kernel": _str(64),
                }
            ),
            "vo": {"type": "array", "minItems": 1, "items": _str(64), "uniqueItems": True},
            "trust": _obj(
                {
                    "model": _enum("model"),
                    "root_policy": _enum("root_policy"),
                    "fs_access": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": _enum("fs_access"),
                    },
                    "contextualisation": _enum("contextualisation"),
                }
            ),
            # Who endorses the image: a contact, and optionally the signer the
            # verifier must find among the attestations (a key id, or a Sigstore
            # identity and issuer), so labels cannot name someone who did not sign.
            "endorser": _obj(
                {
                    "contact": {"type": ["string", "null"], "maxLength": 254},
                    "keyid": _str(64, pattern=HEX64),
                    "identity": _str(1024),
                    "issuer": _str(1024),
                },
                optional=("keyid", "identity", "issuer"),
            ),
            "packages": _obj(
                {
                    "count": count,
                    "manifest_sha256": _str(64, pattern=HEX64),
                    "patch_date": {"type": ["string", "null"], "pattern": DATE},
                }
            ),
            "sbom": _obj(
                {
                    "file": _str(200),
                    "format": {"const": "CycloneDX"},
                    "spec_version": _str(8),
                    "sha256": _str(64, pattern=HEX64),
                }
            ),
            "audit": _obj(
                {
                    "profile": name,
                    "profile_version": _str(16),
                    "profile_digest": _str(71, pattern=r"^sha256:[0-9a-f]{64}$"),
                    "passed": {"type": "boolean"},
                    "checks": count,
                    "failed": {"type": "array", "items": _str(128)},
                    "warnings": {"type": "array", "items": _str(128)},
                    "summary": _obj({"pass": count, "fail": count, "warn": count}),
                }
            ),
            "recipe": _obj(
                {
                    "name": name,
                    "version": _str(64),
                    "digest": _str(71, pattern=r"^sha256:[0-9a-f]{64}$"),
                }
            ),
            "builder": {
                "type": "object",
                "required": ["imagefactory", "libguestfs"],
                "additionalProperties": _str(128),
            },
            "extra": {"type": "object", "additionalProperties": _str(256)},
            # Third-party apt repositories the recipe added, each with the one key
            # apt in the image trusts for it (absent: none); a site policy lists
            # the keys it accepts (repository_keys).
            "repositories": {
                "type": "array",
                "items": _obj(
                    {
                        "name": name,
                        "url": _str(2048, pattern=r"^https?://"),
                        "fingerprint": _str(40, pattern=r"^[0-9A-F]{40}$"),
                    }
                ),
            },
        },
        optional=("repositories",),
    )
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "imagefactory image labels, version 1",
        **schema,
    }
    # The contract (THREATS.md section 2): user root and site file systems don't mix.
    schema["allOf"] = [
        {
            "if": {"properties": {"trust": {"properties": {"root_policy": {"const": "user"}}}}},
            "then": {"properties": {"trust": {"properties": {"fs_access": {"const": ["none"]}}}}},
        }
    ]
    return schema


@cache
def published_schema() -> dict[str, Any]:
    """The schema file shipped in ``labels/schema`` (what verifiers use)."""
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


def validate_labels(labels: Any) -> None:
    """Raise :class:`LabelError` listing every schema violation of ``labels``."""
    # jsonschema costs ~40 ms to import: only what validates labels pays it.
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        published_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(labels), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f".{'.'.join(str(p) for p in e.absolute_path)}: {e.message[:200]}" for e in errors]
        raise LabelError(
            f"labels do not match {SCHEMA_ID}: {len(errors)} problem(s)",
            hint="; ".join(lines[:10]),
        )


def write_files(root: Path = LABELS_DIR) -> list[Path]:
    """(Re)write the schema and vocabulary files under ``root``."""
    written = []
    schema_path = root / "schema" / SCHEMA_FILE.name
    schema_path.parent.mkdir(parents=True, exist_ok=True)
    schema_path.write_text(json.dumps(labels_schema(), indent=2) + "\n", encoding="utf-8")
    written.append(schema_path)
    for name in VOCABULARIES:
        path = root / "vocab" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(vocabulary(name), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_files():
        print(written_path)
