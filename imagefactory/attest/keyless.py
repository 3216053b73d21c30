"""Keyless signing and verifying: Sigstore bundles (v0.3) with sigstore-python.

Signing needs an OIDC identity token (a CI pipeline's ambient credential, or
one given explicitly) and a Sigstore instance: the public-good instance by
default, a private one through a client trust config file. Verifying needs
only the bundle and a trusted root; a policy names which root each signer's
certificates must chain to, and every root gets its own verifier (roots are
never merged: any CA in a union could mint any identity).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.x509 import (
    Certificate,
    ExtensionNotFound,
    ObjectIdentifier,
    OtherName,
    RFC822Name,
    SubjectAlternativeName,
    UniformResourceIdentifier,
)
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError

from imagefactory.errors import InputError
from imagefactory.fsutil import read_bounded

if TYPE_CHECKING:
    from sigstore.dsse import Statement
    from sigstore.models import ClientTrustConfig, TrustedRoot
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext
    from sigstore.verify import Verifier

# sigstore's models, signer and verifier take ~0.3 s to import; they are imported
# where used, so that a key-only policy and the verified cache never pay for them.

#: The trust root name that means Sigstore's public-good instance.
PUBLIC_GOOD = "public-good"

_OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SIGSTORE_OTHERNAME = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


class KeylessError(InputError):
    """Keyless signing cannot proceed (no identity token, unusable trust config)."""


def load_trust_config(path: Path) -> ClientTrustConfig:
    """A client trust config file (trusted root plus signing config) of a private instance."""
    from sigstore.models import ClientTrustConfig

    try:
        return ClientTrustConfig.from_json(read_bounded(path).decode("utf-8"))
    except (OSError, ValueError, RecursionError, SigstoreError) as exc:
        raise KeylessError(f"{path}: not a usable Sigstore client trust config: {exc}") from exc


def load_trusted_root(path: Path) -> TrustedRoot:
    """The trusted root in ``path``: a trusted root file or a client trust config file."""
    from sigstore.models import ClientTrustConfig, TrustedRoot

    try:
        text = read_bounded(path).decode("utf-8")
        media_type = json.loads(text).get("mediaType", "")
        if "clienttrustconfig" in media_type:
            return ClientTrustConfig.from_json(text).trusted_root
        from sigstore_models.trustroot import v1 as trustroot_v1

        # TrustedRoot.from_file would read the path again, unbounded: parse what we read.
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(text))
    except (OSError, ValueError, AttributeError, RecursionError, SigstoreError) as exc:
        raise KeylessError(f"{path}: not a usable Sigstore trusted root: {exc}") from exc


def identity_token(raw: str | None) -> IdentityToken:
    """The OIDC token to sign with: ``raw`` if given, else the ambient CI credential."""
    from sigstore.oidc import IdentityToken, detect_credential

    try:
        token = raw or detect_credential()
    except SigstoreError as exc:  # in a CI job, but no token for us (permissions, request)
        raise KeylessError(
            f"the CI job's OIDC identity token cannot be had: {exc}",
            hint="GitLab: give the job id_tokens: SIGSTORE_ID_TOKEN: aud: sigstore;"
            " GitHub: give the job permissions: id-token: write",
        ) from exc
    if not token:
        raise KeylessError(
            "no OIDC identity token: none given and no ambient CI credential detected",
            hint="run in a CI job with an OIDC identity, pass --identity-token, or sign with --key",
        )
    try:
        return IdentityToken(token)
    except SigstoreError as exc:
        raise KeylessError(f"the OIDC identity token is unusable: {exc}") from exc


def sign_statement(statement: Statement, context: SigningContext, token: IdentityToken) -> str:
    """Sign ``statement`` keylessly; the Sigstore bundle as JSON."""
    with context.signer(token) as signer:
        bundle = signer.sign_dsse(statement)
    return bundle.to_json()


@dataclass(frozen=True)
class CertIdentity:
    """Who a Fulcio certificate was issued to: its SAN identities and OIDC issuer."""

    identities: frozenset[str]
    issuer: str | None


def cert_identity(cert: Certificate) -> CertIdentity:
    """The identities (email, URI, Sigstore other-name SANs) and issuer of ``cert``."""
    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except ExtensionNotFound:
        return CertIdentity(frozenset(), _issuer(cert))
    identities = set(san.get_values_for_type(RFC822Name))
    identities.update(san.get_values_for_type(UniformResourceIdentifier))
    for other in san.get_values_for_type(OtherName):
        if other.type_id == _SIGSTORE_OTHERNAME:
            identities.add(_der_utf8(other.value) or other.value.decode("utf-8", "replace"))
    return CertIdentity(frozenset(identities), _issuer(cert))


def _issuer(cert: Certificate) -> str | None:
    for oid, decode in ((_OIDC_ISSUER_V2, _der_utf8), (_OIDC_ISSUER_V1, _raw_utf8)):
        try:
            value = cert.extensions.get_extension_for_oid(oid).value.value  # type: ignore[attr-defined]
        except ExtensionNotFound:
            continue
        text = decode(value)
        if text is not None:
            return text
    return None


def _raw_utf8(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _der_utf8(value: bytes) -> str | None:
    """A DER UTF8String's text (tag 0x0c, short or long length), or ``None``."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if offset + length != len(value):
        return None
    return _raw_utf8(value[offset:])


@dataclass(frozen=True)
class VerifiedBundle:
    payload_type: str
    payload: bytes
    signer: CertIdentity


class BundleError(Exception):
    """A bundle that does not verify; ``code`` says why."""

    def __init__(self, code: str, message: str, who: CertIdentity | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The certificate's identity, when the chain verified far enough to read it.
        self.who = who


class _Capture:
    """A sigstore verification policy that records the certificate's identity.

    Whether that identity is trusted, and for which VO, is the trust policy's
    decision, taken right after the cryptographic checks pass; the captured
    identity must match a trusted signer or the bundle counts for nothing.
    """

    def __init__(self, accept: Callable[[CertIdentity], bool]) -> None:
        self.accept = accept
        self.seen: CertIdentity | None = None

    def verify(self, cert: Certificate) -> None:
        self.seen = cert_identity(cert)
        if not self.accept(self.seen):
            raise VerificationError("the certificate's identity is not a trusted signer")


def verify_bundle(
    data: bytes, verifier: Verifier, accept: Callable[[CertIdentity], bool]
) -> VerifiedBundle:
    """Verify a Sigstore bundle (JSON bytes) against one trusted root.

    ``accept`` decides whether the certificate's identity is a trusted signer.
    Raises :class:`BundleError` with code ``bundle-invalid`` (unreadable),
    ``untrusted-identity`` (verified, but ``accept`` refused the identity) or
    ``signature-invalid`` (chain, log entry or signature do not verify against
    this trusted root: other bytes, a foreign root, a tampered bundle).
    """
    from sigstore.models import Bundle

    try:
        bundle = Bundle.from_json(data)
    except (ValueError, SigstoreError) as exc:
        raise BundleError("bundle-invalid", f"not a Sigstore bundle: {exc}") from exc
    capture = _Capture(accept)
    try:
        payload_type, payload = verifier.verify_dsse(bundle, capture)
    except SigstoreError as exc:
        if capture.seen is not None and not capture.accept(capture.seen):
            raise BundleError(
                "untrusted-identity",
                f"signed by {describe_identity(capture.seen)}",
                capture.seen,
            ) from exc
        raise BundleError("signature-invalid", f"does not verify: {exc}", capture.seen) from exc
    if capture.seen is None:  # the policy is always consulted; cannot happen
        raise BundleError("signature-invalid", "the certificate was never checked")
    return VerifiedBundle(payload_type, payload, capture.seen)


def describe_identity(who: CertIdentity) -> str:
    """How a certificate identity is shown in reasons."""
    names = ", ".join(sorted(who.identities)) or "(no identity)"
    return f"{names} (issuer {who.issuer or 'unknown'})"
