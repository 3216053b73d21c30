"""A private Sigstore instance in memory, for testing keyless signing offline.

It plays every service with the real sigstore-python ``Signer`` and
``Verifier``: its own root CA (Fulcio), CT log key (SCTs) and Rekor v1 key
(signed checkpoint and SET), a client trust config naming them, a fake Fulcio
that issues a Fulcio-profile leaf certificate with an embedded SCT for the
CSR the signer sends, and a fake Rekor (subclass of sigstore's Rekor v1
client) that returns a one-leaf log entry with an inclusion proof.

It touches sigstore internals (``RekorClient``, ``TransparencyLogEntry``), which
is why ``sigstore`` is pinned exactly. Host names are under ``.invalid``;
nothing is contacted. Several instances can exist at once (a foreign root).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from sigstore._internal.rekor.client import RekorClient
from sigstore.models import ClientTrustConfig, TransparencyLogEntry
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext

SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
OIDC_ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PrivateSigstore:
    """One private Sigstore instance: keys, trust config, fake Fulcio and Rekor."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        self.rekor_log_id = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()
        self.rekor_url = f"https://rekor.{name}.invalid"
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-fulcio-root")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(self.ca_name)
            .issuer_name(self.ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=1))
            .not_valid_after(self.now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.trust_config_json = json.dumps(self._trust_config())

    # -- trust config ------------------------------------------------------------

    def _trust_config(self) -> dict[str, Any]:
        valid_for = {"start": (self.now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")}

        def tlog(url: str, key: ec.EllipticCurvePrivateKey, log_id: bytes) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": valid_for,
                },
                "logId": {"keyId": _b64(log_id)},
            }

        def service(url: str) -> dict[str, Any]:
            return {"url": url, "majorApiVersion": 1, "validFor": valid_for, "operator": "test"}

        fulcio = f"https://fulcio.{self.name}.invalid"
        ca_der = self.ca_cert.public_bytes(serialization.Encoding.DER)
        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [tlog(self.rekor_url, self.rekor_key, self.rekor_log_id)],
                "certificateAuthorities": [
                    {
                        "subject": {"organization": "test", "commonName": f"{self.name}-root"},
                        "uri": fulcio,
                        "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                        "validFor": valid_for,
                    }
                ],
                "ctlogs": [tlog(f"https://ctfe.{self.name}.invalid", self.ct_key, self.ct_log_id)],
                "timestampAuthorities": [],
            },
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [service(fulcio)],
                "oidcUrls": [service(f"https://oidc.{self.name}.invalid")],
                "rekorTlogUrls": [service(self.rekor_url)],
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }

    def write_trust_config(self, path: Path) -> Path:
        path.write_text(self.trust_config_json, encoding="utf-8")
        return path

    def write_trusted_root(self, path: Path) -> Path:
        """Only the trusted root (what a verifying site needs)."""
        path.write_text(json.dumps(self._trust_config()["trustedRoot"]), encoding="utf-8")
        return path

    # -- signing -----------------------------------------------------------------

    def signing_context(self) -> SigningContext:
        trust = ClientTrustConfig.from_json(self.trust_config_json)
        fulcio: Any = SimpleNamespace(signing_cert=_FakeSigningCert(self))
        return SigningContext(
            fulcio=fulcio, rekor=_FakeRekor(self), trusted_root=trust.trusted_root
        )

    @staticmethod
    def token(identity: str, issuer: str) -> IdentityToken:
        """An OIDC token for ``identity`` from ``issuer`` (unsigned claims are all Fulcio reads)."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": "sigstore",
            "sub": identity,
            "email": identity,
            "iat": now,
            "exp": now + 600,
        }
        return IdentityToken(jwt.encode(claims, key="test-only-hmac-key-of-32-bytes!!"))

    # -- fake Fulcio pieces --------------------------------------------------------

    def sct_extension(self, tbs_precert: bytes) -> x509.UnrecognizedExtension:
        ts_ms = int(time.time() * 1000)
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        signed = (
            struct.pack("!BBQH", 0, 0, ts_ms, 1)
            + issuer_key_hash
            + struct.pack("!I", len(tbs_precert))[1:]
            + tbs_precert
            + struct.pack("!H", 0)
        )
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            struct.pack("!B", 0)
            + self.ct_log_id
            + struct.pack("!QH", ts_ms, 0)
            + struct.pack("!BBH", 4, 3, len(sig))
            + sig
        )
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        if len(sct_list) < 128:
            der = bytes([0x04, len(sct_list)]) + sct_list
        else:
            der = bytes([0x04, 0x81, len(sct_list)]) + sct_list
        return x509.UnrecognizedExtension(SCT_OID, der)


class _FakeSigningCert:
    def __init__(self, instance: PrivateSigstore) -> None:
        self.instance = instance

    def post(self, csr: x509.CertificateSigningRequest, token: IdentityToken) -> Any:
        inst = self.instance
        serial = x509.random_serial_number()

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(inst.ca_name)
                .public_key(csr.public_key())
                .serial_number(serial)
                .not_valid_before(inst.now - dt.timedelta(minutes=1))
                .not_valid_after(inst.now + dt.timedelta(minutes=10))
                .add_extension(
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
                )
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(token.identity)]),
                    critical=True,
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(inst.ca_key.public_key()),
                    critical=False,
                )
                .add_extension(
                    x509.UnrecognizedExtension(OIDC_ISSUER_OID, token.issuer.encode()),
                    critical=False,
                )
            )

        precert = builder().sign(inst.ca_key, hashes.SHA256())
        cert = (
            builder()
            .add_extension(inst.sct_extension(precert.tbs_certificate_bytes), critical=False)
            .sign(inst.ca_key, hashes.SHA256())
        )
        return SimpleNamespace(cert=cert, chain=[inst.ca_cert])


class _FakeRekor(RekorClient):
    def __init__(self, instance: PrivateSigstore) -> None:
        super().__init__(instance.rekor_url)
        self.instance = instance
        self.index = 0

    def create_entry(self, request: Any) -> TransparencyLogEntry:
        inst = self.instance
        if request["kind"] == "dsse":
            proposed = request["spec"]["proposedContent"]
            envelope = json.loads(proposed["envelope"])
            body: Any = {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(proposed["envelope"].encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest(),
                    },
                    "signatures": [
                        {"signature": s["sig"], "verifier": proposed["verifiers"][0]}
                        for s in envelope["signatures"]
                    ],
                },
            }
        else:
            body = request
        body_bytes = rfc8785.dumps(body)
        leaf = hashlib.sha256(b"\x00" + body_bytes).digest()
        integrated = int(time.time())
        entry: dict[str, Any] = {
            "body": _b64(body_bytes),
            "integratedTime": integrated,
            "logID": inst.rekor_log_id.hex(),
            "logIndex": self.index,
        }
        set_sig = inst.rekor_key.sign(rfc8785.dumps(entry), ec.ECDSA(hashes.SHA256()))
        host = inst.rekor_url.removeprefix("https://")
        note = f"{host} - 1\n1\n{_b64(leaf)}\n"
        note_sig = inst.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + "\n" + f"\u2014 {host} {_b64(inst.rekor_log_id[:4] + note_sig)}\n"
        response = {
            "uuid": {
                **entry,
                "verification": {
                    "signedEntryTimestamp": _b64(set_sig),
                    "inclusionProof": {
                        "logIndex": 0,
                        "rootHash": leaf.hex(),
                        "treeSize": 1,
                        "hashes": [],
                        "checkpoint": checkpoint,
                    },
                },
            }
        }
        self.index += 1
        return TransparencyLogEntry._from_v1_response(response)
