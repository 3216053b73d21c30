"""The in-toto Statement v1 an image's attestations carry.

Subjects: the disk (sha256 and sha512), ``labels.json``, the SBOM and
``audit.json`` (sha256),
named by their file names in the image directory. Predicate type:
:data:`PREDICATE_TYPE`; predicate: the labels. The payload bytes are made here
(canonical JSON) and, for keyless signing, checked by sigstore-python's own
model (:class:`sigstore.dsse.Statement`); the keyless and key-based paths sign
the very same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagefactory.digest import hash_file
from imagefactory.model.imagedir import ImageDir

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "urn:imagefactory:labels:v1"


@dataclass(frozen=True)
class Subject:
    name: str
    digests: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": dict(self.digests)}


def image_subjects(image: ImageDir) -> list[Subject]:
    """Digest the image directory's subject files (the disk in sha256 and sha512)."""
    subjects = []
    for path in image.subjects():
        algorithms = ("sha256", "sha512") if path == image.disk else ("sha256",)
        subjects.append(Subject(path.name, hash_file(path, algorithms).hexdigests))
    return subjects


def statement_bytes(subjects: list[Subject], labels: Mapping[str, Any]) -> bytes:
    """The canonical JSON of the statement over ``subjects`` with ``labels`` as predicate."""
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [s.to_dict() for s in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(labels),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
