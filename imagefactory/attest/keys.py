"""Key-based signing: DSSE envelopes with securesystemslib signers.

A key is an ECDSA P-256 key pair in PEM files (``imagefactory key generate``),
or a private key URI understood by securesystemslib (``file2:PATH``,
``hsm:...``, ``gcpkms:...``, ``awskms:...``, ``azurekms:...``, ``hv:...``) with
its public key in a PEM file. A key's id is the sha256 of its public key
(DER SubjectPublicKeyInfo), so a signer and a verifier compute the same id
from the public key alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import FormatError, UnverifiedSignatureError
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey

from imagefactory.errors import FileAccessError, InputError
from imagefactory.fsutil import read_bounded

#: Largest PEM key file read (a key is a few KiB).
MAX_KEY_BYTES = 1024 * 1024

#: Private key URI schemes handed to securesystemslib (HSM, KMS, Vault).
URI_SCHEMES = ("file2", "hsm", "gcpkms", "awskms", "azurekms", "hv")


class KeyFileError(InputError):
    """A key file or key URI cannot be used."""


def key_id(public_key: PublicKeyTypes) -> str:
    """The id of a public key: sha256 of its DER SubjectPublicKeyInfo, in hex."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_key_from_pem(data: bytes, source: str) -> SSlibKey:
    """The securesystemslib key for a PEM public key, with our key id."""
    try:
        crypto_key = serialization.load_pem_public_key(data)
        return SSlibKey.from_crypto(crypto_key, keyid=key_id(crypto_key))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not a usable PEM public key: {exc}") from exc


def _unreadable(path: Path, what: str, exc: OSError) -> InputError | FileAccessError:
    """A key file read_bounded refused (too large, a FIFO: an unusable key, exit 1), or
    one that cannot be read at all (missing, no permission: exit 2, like any file)."""
    if exc.errno in (errno.EFBIG, errno.EINVAL):
        return KeyFileError(f"{path}: cannot use the {what}: {exc.strerror}")
    return FileAccessError.from_os_error(path, f"read the {what}", exc)


def load_public_key(path: Path) -> SSlibKey:
    try:
        data = read_bounded(path, MAX_KEY_BYTES)
    except OSError as exc:
        raise _unreadable(path, "public key", exc) from exc
    return public_key_from_pem(data, str(path))


@dataclass(frozen=True)
class GeneratedKey:
    private: Path
    public: Path
    keyid: str


def generate_key(private_path: Path) -> GeneratedKey:
    """Write a new ECDSA P-256 key pair: ``PATH`` (private, mode 0600) and ``PATH.pub``.

    Refuses to overwrite an existing file.
    """
    public_path = private_path.with_name(private_path.name + ".pub")
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for target in (private_path, public_path):
        if target.exists() or target.is_symlink():
            raise KeyFileError(f"{target}: exists; refusing to overwrite a key")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(private_path, flags, 0o600)
    except OSError as exc:
        raise FileAccessError.from_os_error(private_path, "create the private key", exc) from exc
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    try:
        public_path.write_bytes(public_pem)
    except OSError as exc:
        # A private key whose public half could not be written is of no use.
        private_path.unlink(missing_ok=True)
        raise FileAccessError.from_os_error(public_path, "write the public key", exc) from exc
    return GeneratedKey(private_path, public_path, key_id(private_key.public_key()))


def load_signer(key: str, public_key: Path | None = None) -> Signer:
    """A signer for ``--key``: a PEM private key file, or a private key URI.

    A URI needs the matching public key (``public_key``, a PEM file); a file
    key carries its own.
    """
    scheme = key.partition(":")[0]
    if scheme in URI_SCHEMES and not Path(key).exists():
        if public_key is None:
            raise KeyFileError(
                f"key URI {key!r} needs its public key", hint="pass --public-key PUBKEY.pem"
            )
        try:
            return Signer.from_priv_key_uri(key, load_public_key(public_key))
        except (ValueError, OSError) as exc:
            raise KeyFileError(f"cannot use the key URI {key!r}: {exc}") from exc
    path = Path(key)
    try:
        private_key = serialization.load_pem_private_key(
            read_bounded(path, MAX_KEY_BYTES), password=None
        )
    except OSError as exc:
        raise _unreadable(path, "private key", exc) from exc
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    crypto_public = private_key.public_key()
    sslib_key = SSlibKey.from_crypto(crypto_public, keyid=key_id(crypto_public))
    if public_key is not None and load_public_key(public_key) != sslib_key:
        raise KeyFileError(f"{public_key}: is not the public key of {path}")
    try:
        return CryptoSigner(private_key, sslib_key)
    except ValueError as exc:
        raise KeyFileError(f"{path}: unsupported key type: {exc}") from exc


def sign_envelope(payload: bytes, payload_type: str, signer: Signer) -> dict[str, Any]:
    """A DSSE envelope over ``payload`` signed by ``signer``, as its JSON object."""
    envelope = Envelope(payload, payload_type, {})
    envelope.sign(signer)
    result: dict[str, Any] = envelope.to_dict()
    return result


class EnvelopeError(Exception):
    """An envelope that does not verify; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedEnvelope:
    payload_type: str
    payload: bytes
    #: Ids of the trusted keys whose signatures verified.
    keyids: frozenset[str]


def verify_envelope(data: bytes, keys: list[SSlibKey]) -> VerifiedEnvelope:
    """Verify a DSSE envelope (JSON bytes) against ``keys``.

    Raises :class:`EnvelopeError` with code ``envelope-invalid`` (unreadable),
    ``untrusted-key`` (no signature names a trusted key) or
    ``signature-invalid`` (a signature names a trusted key but does not verify
    over these bytes).
    """
    try:
        raw = json.loads(data)
        envelope = Envelope.from_dict(raw) if isinstance(raw, dict) else None
    # RecursionError: deeply nested JSON; AttributeError: a field of the wrong type.
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, FormatError) as exc:
        raise EnvelopeError("envelope-invalid", f"not a DSSE envelope: {exc}") from exc
    if envelope is None:
        raise EnvelopeError("envelope-invalid", "not a DSSE envelope: not a JSON object")
    # from_dict copies fields without checking their types; the signature check
    # below would trip over a list where a string belongs.
    if not isinstance(envelope.payload_type, str) or not isinstance(envelope.payload, bytes):
        raise EnvelopeError("envelope-invalid", "not a DSSE envelope: payloadType is not a string")
    by_id = {key.keyid: key for key in keys}
    named = [keyid for keyid in envelope.signatures if keyid in by_id]
    if not named:
        shown = ", ".join(k[:16] for k in envelope.signatures) or "none"
        raise EnvelopeError(
            "untrusted-key", f"signed by key(s) {shown}, none of them trusted by the policy"
        )
    verified: set[str] = set()
    pae = envelope.pae()
    for keyid in named:
        try:
            by_id[keyid].verify_signature(envelope.signatures[keyid], pae)
        except (UnverifiedSignatureError, SslibVerificationError):
            continue
        verified.add(keyid)
    if not verified:
        raise EnvelopeError(
            "signature-invalid",
            "the signature of trusted key "
            f"{named[0][:16]} does not verify over this payload (signed other bytes)",
        )
    return VerifiedEnvelope(envelope.payload_type, envelope.payload, frozenset(verified))
