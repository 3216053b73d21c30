"""Which trusted signers signed which statement: the attestation files, checked.

Each attestation is checked cryptographically against the policy's signers
(DSSE envelopes against its public keys; Sigstore bundles against each trust
root its keyless signers name, one verifier per root). What comes out is, per
valid attestation, the payload and the policy signers (``(vo, name)``) it
counts for; what failed comes out as reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sigstore.errors import Error as SigstoreError

from imagefactory.attest.keyless import (
    PUBLIC_GOOD,
    BundleError,
    CertIdentity,
    KeylessError,
    describe_identity,
    verify_bundle,
)
from imagefactory.attest.keys import EnvelopeError, verify_envelope
from imagefactory.model.imagedir import DSSE_SUFFIX, LayoutError, read_small
from imagefactory.trust.model import KeySigner, SigstoreSigner, TrustPolicy
from imagefactory.verify.verdict import Reason

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

STEP = "signatures"

#: (vo, signer name)
SignerRef = tuple[str, str]


@dataclass(frozen=True)
class Attestation:
    """A cryptographically valid attestation and the policy signers it counts for."""

    file: Path
    payload_type: str
    payload: bytes
    signers: frozenset[SignerRef]
    #: Key ids (key-based) that signed.
    keyids: frozenset[str] = frozenset()
    #: The certificate's identity (keyless).
    identity: CertIdentity | None = None


@dataclass
class SignatureResult:
    valid: list[Attestation] = field(default_factory=list)
    failures: list[Reason] = field(default_factory=list)


class Verifiers:
    """One sigstore verifier per trust root, made when first needed, never merged."""

    def __init__(self) -> None:
        self._by_root: dict[str, Verifier] = {}

    def get(self, signer: SigstoreSigner) -> Verifier:
        from sigstore.verify import Verifier

        verifier = self._by_root.get(signer.trust_root)
        if verifier is None:
            if signer.trust_root == PUBLIC_GOOD:
                # offline: the root in sigstore's local TUF cache; a host never fetches
                # trust material while deciding whether a VM may boot.
                try:
                    verifier = Verifier.production(offline=True)
                except (SigstoreError, OSError) as exc:
                    raise KeylessError(
                        f"cannot load Sigstore's public-good trusted root offline: {exc}",
                        hint="refresh sigstore's TUF cache on this host, or name a trusted"
                        " root file in the policy",
                    ) from exc
            else:
                root: TrustedRoot | None = signer.root
                if root is None:  # the loader always sets it for a file root
                    raise ValueError(f"trust root {signer.trust_root} was not loaded")
                verifier = Verifier(trusted_root=root)
            self._by_root[signer.trust_root] = verifier
        return verifier


def check_attestations(
    files: Iterable[Path], policy: TrustPolicy, verifiers: Verifiers
) -> SignatureResult:
    """Check every attestation file against every signer of ``policy``."""
    keyed: list[tuple[str, KeySigner]] = []
    keyless: list[tuple[str, SigstoreSigner]] = []
    for vo in policy.vos.values():
        for signer in vo.signers:
            if isinstance(signer, KeySigner):
                keyed.append((vo.name, signer))
            else:
                keyless.append((vo.name, signer))
    result = SignatureResult()
    for path in files:
        try:
            data = read_small(path, "attestation")
        except LayoutError as exc:
            result.failures.append(Reason("layout", STEP, exc.message))
            continue
        if path.name.endswith(DSSE_SUFFIX):
            _check_envelope(path, data, keyed, result)
        else:
            _check_bundle(path, data, keyless, verifiers, result)
    return result


def _check_envelope(
    path: Path, data: bytes, keyed: list[tuple[str, KeySigner]], result: SignatureResult
) -> None:
    keys = {s.keyid: s.key for _, s in keyed}
    try:
        envelope = verify_envelope(data, list(keys.values()))
    except EnvelopeError as exc:
        result.failures.append(Reason(exc.code, STEP, f"{path.name}: {exc.message}"))
        return
    refs = frozenset((vo, s.name) for vo, s in keyed if s.keyid in envelope.keyids)
    result.valid.append(
        Attestation(path, envelope.payload_type, envelope.payload, refs, keyids=envelope.keyids)
    )


def _check_bundle(
    path: Path,
    data: bytes,
    keyless: list[tuple[str, SigstoreSigner]],
    verifiers: Verifiers,
    result: SignatureResult,
) -> None:
    roots: dict[str, list[tuple[str, SigstoreSigner]]] = {}
    for vo, signer in keyless:
        roots.setdefault(signer.trust_root, []).append((vo, signer))
    if not roots:
        result.failures.append(
            Reason(
                "untrusted-identity",
                STEP,
                f"{path.name}: a Sigstore bundle, but the policy trusts no Sigstore identity",
            )
        )
        return
    errors: list[BundleError] = []
    for signers in roots.values():

        def accept(who: CertIdentity, signers: list[tuple[str, SigstoreSigner]] = signers) -> bool:
            return any(_matches(s, who) for _, s in signers)

        try:
            bundle = verify_bundle(data, verifiers.get(signers[0][1]), accept)
        except BundleError as exc:
            errors.append(exc)
            continue
        refs = frozenset((vo, s.name) for vo, s in signers if _matches(s, bundle.signer))
        result.valid.append(
            Attestation(path, bundle.payload_type, bundle.payload, refs, identity=bundle.signer)
        )
        return
    result.failures.append(_bundle_reason(path, errors, [s for _, s in keyless]))


def _matches(signer: SigstoreSigner, who: CertIdentity) -> bool:
    return signer.matches_identity(who.identities) and signer.matches_issuer(who.issuer)


def _bundle_reason(path: Path, errors: list[BundleError], signers: list[SigstoreSigner]) -> Reason:
    """The most telling reason among one bundle's failures against every trust root."""
    for exc in errors:
        who = exc.who
        if exc.code == "untrusted-identity" and who is not None:
            same_identity = [s for s in signers if s.matches_identity(who.identities)]
            if same_identity:
                expected = ", ".join(s.describe() for s in same_identity)
                return Reason(
                    "wrong-issuer",
                    STEP,
                    f"{path.name}: signed by {describe_identity(who)}; the policy trusts this"
                    f" identity only as {expected}",
                )
            return Reason(
                "untrusted-identity",
                STEP,
                f"{path.name}: signed by {describe_identity(who)}, not a trusted signer",
            )
    for exc in errors:
        if exc.code == "signature-invalid" and exc.who is not None:
            return Reason("signature-invalid", STEP, f"{path.name}: {exc.message}")
    for exc in errors:
        if exc.code == "bundle-invalid":
            return Reason("bundle-invalid", STEP, f"{path.name}: {exc.message}")
    shown = "; ".join(exc.message for exc in errors)
    return Reason(
        "untrusted-root",
        STEP,
        f"{path.name}: does not verify against any trusted root of the policy ({shown})",
    )
