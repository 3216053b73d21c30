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
        if path.name.startswith(".") or not path.name.endswith((DSSE_SUFFIX, SIGSTORE_SUFFIX)):
            continue
        try:
            data = read_small(path, "an attestation")
        except ImageFactoryError:
            data = None
        claim = claimed_signer(path.name, data)
        if claim is not None:
            claims.append(claim)
    return claims


def claimed_signer(name: str, data: bytes | None) -> Claim | None:
    """The signer the attestation ``name`` with content ``data`` claims (``None``: unreadable).

    ``None`` as the result: ``name`` is not an attestation's file name. Callers
    that checked ``data`` against a signed digest (the catalog page) pass the
    checked bytes; nothing is read here.
    """
    if name.endswith(DSSE_SUFFIX):
        return Claim(name, "dsse", _dsse_signer(data))
    if name.endswith(SIGSTORE_SUFFIX):
        return Claim(name, "sigstore", _sigstore_signer(data))
    return None


def _dsse_signer(data: bytes | None) -> str:
    if data is None:
        return "(unreadable DSSE envelope)"
    try:
        envelope = json.loads(data)
        keyids = [str(s["keyid"]) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError):
        return "(unreadable DSSE envelope)"
    return ", ".join(f"key {k}" for k in keyids) or "(no signature)"


def _sigstore_signer(data: bytes | None) -> str:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    if data is None:
        return "(unreadable Sigstore bundle)"
    try:
        bundle = Bundle.from_json(data)
        return describe_identity(cert_identity(bundle.signing_certificate))
    except (ValueError, SigstoreError):
        return "(unreadable Sigstore bundle)"
