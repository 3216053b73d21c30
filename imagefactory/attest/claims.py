"""Who an image directory's attestations *claim* to be signed by, without verifying them.

For ``labels show``: a user reading the labels wants to know which
attestations sit next to them and by whom. Nothing here is a verdict; the
claims are read with the same size caps as everything else in the directory
and shown as "claimed" (``verify`` is what checks them against a policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from imagefactory.attest.keyless import cert_identity, describe_identity
from imagefactory.errors import ImageFactoryError
from imagefactory.model.imagedir import DSSE_SUFFIX, SIGSTORE_SUFFIX, read_small


@dataclass(frozen=True)
class Claim:
    """One attestation file and the signer it names (unverified)."""

    file: str
    kind: str
    signer: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "claimed_signer": self.signer}


def claimed_signers(directory: Path) -> list[Claim]:
    """Every attestation in ``directory`` with the signer it claims, sorted by file name."""
    claims = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name.endswith(DSSE_SUFFIX):
            claims.append(Claim(path.name, "dsse", _dsse_signer(path)))
        elif path.name.endswith(SIGSTORE_SUFFIX):
            claims.append(Claim(path.name, "sigstore", _sigstore_signer(path)))
    return claims


def _dsse_signer(path: Path) -> str:
    try:
        envelope = json.loads(read_small(path, "an attestation"))
        keyids = [str(s["keyid"]) for s in envelope["signatures"]]
    except (ImageFactoryError, ValueError, KeyError, TypeError):
        return "(unreadable DSSE envelope)"
    return ", ".join(f"key {k}" for k in keyids) or "(no signature)"


def _sigstore_signer(path: Path) -> str:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    try:
        bundle = Bundle.from_json(read_small(path, "an attestation"))
        return describe_identity(cert_identity(bundle.signing_certificate))
    except (ImageFactoryError, ValueError, SigstoreError):
        return "(unreadable Sigstore bundle)"
