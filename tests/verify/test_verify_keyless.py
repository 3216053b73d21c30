"""Keyless (Sigstore) signing and verify, offline, against in-process private instances.

Covers THREATS.md section 1 for identities: untrusted identity, right identity
from the wrong OIDC issuer, a foreign trust root, signature over other bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagefactory.attest.sign import sign_keyless
from imagefactory.trust import TrustPolicy, load_policy
from imagefactory.verify import Verdict, VerifyOptions, verify_image
from tests.fakes.imagedirs import (
    IDENTITY,
    ISSUER,
    NOW,
    OTHER_ISSUER,
    make_image,
    vo_rules,
    write_policy,
)
from tests.fakes.sigstore_instance import PrivateSigstore


@pytest.fixture(scope="module")
def instance() -> PrivateSigstore:
    return PrivateSigstore("ci")


@pytest.fixture(scope="module")
def foreign() -> PrivateSigstore:
    return PrivateSigstore("foreign")


def keyless_policy(tmp_path: Path, root: PrivateSigstore, **sigstore: Any) -> TrustPolicy:
    root_file = root.write_trusted_root(tmp_path / f"{root.name}-root.json")
    spec = {"identity": IDENTITY, "issuer": ISSUER, **sigstore, "trust_root": root_file.name}
    spec = {key: value for key, value in spec.items() if value is not None}
    vos = {"atlas": vo_rules({"name": "atlas-ci", "sigstore": spec})}
    return load_policy(write_policy(tmp_path / "site.yaml", vos))


def sign(
    image: Path, instance: PrivateSigstore, identity: str = IDENTITY, issuer: str = ISSUER
) -> Path:
    token = instance.token(identity, issuer)
    return sign_keyless(image, instance.signing_context(), token, check_labels=False).path


def verify(image: Path, trust: TrustPolicy) -> Verdict:
    return verify_image(image, trust, VerifyOptions(now=NOW))


def assert_denied(verdict: Verdict, code: str) -> None:
    assert not verdict.allowed, verdict.render()
    assert code in verdict.codes, verdict.render()


def test_keyless_signed_image_is_allowed(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    bundle = sign(image, instance)
    assert bundle.name.endswith(".sigstore.json")
    assert json.loads(bundle.read_text())["mediaType"].endswith("v0.3+json")
    verdict = verify(image, keyless_policy(tmp_path, instance))
    assert verdict.allowed, verdict.render()
    assert verdict.signers == ["atlas: atlas-ci"]


def test_keyless_identity_pattern(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    sign(image, instance)
    trust = keyless_policy(
        tmp_path, instance, identity=None, identity_pattern=r"[a-z]+@atlas\.example"
    )
    assert verify(image, trust).allowed


def test_trust_config_file_works_as_trust_root(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    sign(image, instance)
    instance.write_trust_config(tmp_path / "trust-config.json")
    spec = {"identity": IDENTITY, "issuer": ISSUER, "trust_root": "trust-config.json"}
    vos = {"atlas": vo_rules({"name": "atlas-ci", "sigstore": spec})}
    assert verify(image, load_policy(write_policy(tmp_path / "site.yaml", vos))).allowed


def test_threat_keyless_untrusted_identity(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    sign(image, instance, identity="mallory@evil.example")
    verdict = verify(image, keyless_policy(tmp_path, instance))
    assert_denied(verdict, "untrusted-identity")
    assert "mallory@evil.example" in verdict.denials[0].message


def test_threat_keyless_right_identity_wrong_issuer(
    tmp_path: Path, instance: PrivateSigstore
) -> None:
    image = make_image(tmp_path)
    sign(image, instance, issuer=OTHER_ISSUER)
    verdict = verify(image, keyless_policy(tmp_path, instance))
    assert_denied(verdict, "wrong-issuer")
    assert OTHER_ISSUER in verdict.denials[0].message


def test_threat_keyless_foreign_trust_root(
    tmp_path: Path, instance: PrivateSigstore, foreign: PrivateSigstore
) -> None:
    """Same identity and issuer, but certified by another Sigstore instance's CA."""
    image = make_image(tmp_path)
    sign(image, foreign)
    assert_denied(verify(image, keyless_policy(tmp_path, instance)), "untrusted-root")


def test_threat_keyless_signature_over_other_bytes(
    tmp_path: Path, instance: PrivateSigstore
) -> None:
    image = make_image(tmp_path)
    other = make_image(tmp_path, "other")
    bundle = sign(other, instance)
    # The other image's valid bundle, moved next to this image: it signs other bytes.
    bundle.rename(image / bundle.name)
    verdict = verify(image, keyless_policy(tmp_path, instance))
    assert_denied(verdict, "subject-mismatch")


def test_threat_keyless_tampered_envelope(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    bundle = sign(image, instance)
    other_bundle = sign(make_image(tmp_path, "other"), instance)
    data = json.loads(bundle.read_text())
    data["dsseEnvelope"]["payload"] = json.loads(other_bundle.read_text())["dsseEnvelope"][
        "payload"
    ]
    bundle.write_text(json.dumps(data))
    assert_denied(verify(image, keyless_policy(tmp_path, instance)), "signature-invalid")


def test_threat_keyless_bundle_unreadable(tmp_path: Path, instance: PrivateSigstore) -> None:
    image = make_image(tmp_path)
    (image / "junk.sigstore.json").write_text('{"mediaType": "nonsense"}')
    assert_denied(verify(image, keyless_policy(tmp_path, instance)), "bundle-invalid")


def test_keyless_endorser_identity_must_be_the_signer(
    tmp_path: Path, instance: PrivateSigstore
) -> None:
    def endorse(labels: dict[str, Any]) -> None:
        labels["endorser"] = {"identity": "someone-else@atlas.example", "issuer": ISSUER}

    image = make_image(tmp_path, edit=endorse)
    sign(image, instance)
    trust = keyless_policy(tmp_path, instance, identity=None, identity_pattern=r".*@atlas\.example")
    assert_denied(verify(image, trust), "endorser-mismatch")
