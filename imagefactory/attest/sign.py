"""``sign``: attest an image directory, with a key or keylessly.

Before signing, the disk must pass :func:`imagefactory.diskformat.check_safe`
with its declared format and match the digests labels.json records: a signer
vouches for what the labels say, so a disagreement stops here. The
attestation is written next to the image (atomically, never overwriting
another signer's), so an image can carry several.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from securesystemslib.signer import Signer

from imagefactory.attest.keyless import sign_statement
from imagefactory.attest.keys import sign_envelope
from imagefactory.attest.statement import (
    PAYLOAD_TYPE,
    Subject,
    image_subjects,
    statement_bytes,
)
from imagefactory.diskformat import check_safe
from imagefactory.fsutil import atomic_write
from imagefactory.model.imagedir import (
    DSSE_SUFFIX,
    SIGSTORE_SUFFIX,
    ImageDir,
    LayoutError,
    load_image_dir,
)
from imagefactory.model.labelschema import validate_labels

if TYPE_CHECKING:
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext


@dataclass(frozen=True)
class Signed:
    """What one signing did: the attestation written, what it covers, and who signed."""

    path: Path
    subjects: list[Subject]
    #: ``key <keyid>`` or ``<identity> (issuer <issuer>)``: as verify will name the signer.
    signer: str

    def to_dict(self) -> dict[str, object]:
        return {
            "attestation": str(self.path),
            "subjects": [s.to_dict() for s in self.subjects],
            "signer": self.signer,
        }


def _prepare(path: Path, check_labels: bool) -> tuple[ImageDir, list[Subject], bytes]:
    image = load_image_dir(path)
    # Never sign labels a verifier would have to read past: the schema first.
    if check_labels:
        validate_labels(image.labels)
    check_safe(image.disk, declared_format=image.declared_format)
    subjects = image_subjects(image)
    by_name = {s.name: s for s in subjects}
    for key, file in (("disk", image.disk), ("sbom", image.sbom)):
        claimed = image.labels.get(key)
        if not isinstance(claimed, dict):
            continue
        for algorithm, value in by_name[file.name].digests.items():
            if claimed.get(algorithm) not in (None, value):
                raise LayoutError(
                    f"{file}: {algorithm} is {value}, but labels.json says"
                    f" {claimed.get(algorithm)}; refusing to sign labels that do not describe it"
                )
    return image, subjects, statement_bytes(subjects, image.labels)


def sign_with_key(path: Path, signer: Signer, *, check_labels: bool = True) -> Signed:
    """Sign the image at ``path`` with a securesystemslib signer.

    Raises :class:`LabelError` when labels.json does not match the labels
    schema (``check_labels=False`` only for tests of what verify does with such
    labels).
    """
    image, subjects, payload = _prepare(path, check_labels)
    envelope = sign_envelope(payload, PAYLOAD_TYPE, signer)
    keyid = str(signer.public_key.keyid)
    written = _write(image.path, f"key-{keyid[:16]}{DSSE_SUFFIX}", json.dumps(envelope, indent=2))
    return Signed(written, subjects, f"key {keyid}")


def sign_keyless(
    path: Path, context: SigningContext, token: IdentityToken, *, check_labels: bool = True
) -> Signed:
    """Sign the image at ``path`` keylessly (Sigstore).

    Raises :class:`LabelError` as :func:`sign_with_key` does.
    """
    from sigstore.dsse import Statement

    image, subjects, payload = _prepare(path, check_labels)
    bundle = sign_statement(Statement(payload), context, token)
    who = hashlib.sha256(f"{token.identity}\0{token.issuer}".encode()).hexdigest()[:16]
    written = _write(image.path, f"sigstore-{who}{SIGSTORE_SUFFIX}", bundle)
    return Signed(written, subjects, f"{token.identity} (issuer {token.issuer})")


def _write(directory: Path, name: str, text: str) -> Path:
    return atomic_write(directory / name, text + "\n", 0o644)
