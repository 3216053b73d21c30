"""Key-based signing and verify, and the hostile cases of THREATS.md section 1.

Each threat test names its threat and asserts the specific refusal code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from imagefactory.attest.keys import load_signer, sign_envelope
from imagefactory.attest.statement import PAYLOAD_TYPE
from imagefactory.diskformat import UnsafeImageError
from imagefactory.errors import InspectionError
from imagefactory.model.imagedir import LayoutError
from imagefactory.trust import TrustPolicy, load_policy
from imagefactory.verify import Verdict, VerifyOptions, verify_image
from tests.fakes import diskimages as fx
from tests.fakes.imagedirs import (
    NOW,
    key_sign,
    key_signer,
    make_image,
    new_key,
    read_labels,
    vo_rules,
    write_labels,
    write_policy,
)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return {name: new_key(tmp_path, name) for name in ("atlas", "cms", "site", "stranger")}


def policy(tmp_path: Path, keys: dict[str, Path], **atlas_rules: Any) -> TrustPolicy:
    vos = {
        "atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]), **atlas_rules),
        "cms": vo_rules(key_signer("cms-vo", keys["cms"])),
    }
    return load_policy(write_policy(tmp_path / "site.yaml", vos))


def verify(image: Path, trust: TrustPolicy, **options: Any) -> Verdict:
    return verify_image(image, trust, VerifyOptions(now=NOW, **options))


def assert_denied(verdict: Verdict, code: str) -> None:
    assert not verdict.allowed, verdict.render()
    assert code in verdict.codes, verdict.render()


def test_key_signed_image_is_allowed(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    attestation = key_sign(image, keys["atlas"])
    verdict = verify(image, policy(tmp_path, keys))
    assert verdict.allowed, verdict.render()
    assert verdict.signers == ["atlas: atlas-vo"]
    assert verdict.steps[-1] == "inspection"
    assert attestation.name.endswith(".dsse.json")
    statement = json.loads(base64.b64decode(json.loads(attestation.read_text())["payload"]))
    assert statement["predicateType"] == "urn:imagefactory:labels:v1"
    assert [s["name"] for s in statement["subject"]] == [
        "atlas-wn-debian12-1.0.raw",
        "labels.json",
        "sbom.cdx.json",
        "audit.json",
    ]
    assert statement["predicate"] == read_labels(image)


@pytest.mark.parametrize("changed", ["atlas-wn-debian12-1.0.raw", "sbom.cdx.json"])
def test_sign_refuses_labels_that_do_not_describe_the_files(
    tmp_path: Path, keys: dict[str, Path], changed: str
) -> None:
    image = make_image(tmp_path)
    target = image / changed
    target.write_bytes(target.read_bytes() + b" ")
    with pytest.raises(LayoutError, match="refusing to sign labels"):
        key_sign(image, keys["atlas"])
    assert not list(image.glob("*.dsse.json"))


def test_sign_refuses_an_unsafe_disk(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path, disk=fx.qcow2(size=1 << 20))
    with pytest.raises(UnsafeImageError) as refused:
        key_sign(image, keys["atlas"])
    assert refused.value.codes == ["format-confusion"]


def test_qcow2_image_signed_and_allowed(tmp_path: Path, keys: dict[str, Path]) -> None:
    if fx.QEMU_IMG is None:
        pytest.skip("qemu-img is not installed")
    image = make_image(tmp_path, qcow2=True)
    key_sign(image, keys["atlas"])
    assert verify(image, policy(tmp_path, keys)).allowed


def test_threat_unsigned_image(tmp_path: Path, keys: dict[str, Path]) -> None:
    verdict = verify(make_image(tmp_path), policy(tmp_path, keys))
    assert_denied(verdict, "unsigned")
    assert verdict.steps[-1] == "signatures"


def test_threat_signature_over_other_bytes(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    attestation = key_sign(image, keys["atlas"])
    envelope = json.loads(attestation.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["vo"] = ["atlas", "cms"]
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    attestation.write_text(json.dumps(envelope))
    assert_denied(verify(image, policy(tmp_path, keys)), "signature-invalid")


def test_threat_disk_changed_after_signing(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    disk = image / "atlas-wn-debian12-1.0.raw"
    disk.write_bytes(disk.read_bytes()[:-1] + b"X")
    verdict = verify(image, policy(tmp_path, keys))
    assert_denied(verdict, "labels-digest-mismatch")
    assert verdict.steps[-1] == "digests"


def test_threat_disk_and_labels_changed_after_signing(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """The attacker also rewrites labels.json's digests: the signed statement still differs."""
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    disk = image / "atlas-wn-debian12-1.0.raw"
    other = make_image(tmp_path, "other")
    disk.write_bytes((other / disk.name).read_bytes())
    labels = read_labels(image)
    labels["disk"] = read_labels(other)["disk"]
    write_labels(image, labels)
    verdict = verify(image, policy(tmp_path, keys))
    assert_denied(verdict, "subject-mismatch")
    assert "predicate-mismatch" in verdict.codes


def test_threat_untrusted_key(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    key_sign(image, keys["stranger"])
    assert_denied(verify(image, policy(tmp_path, keys)), "untrusted-key")


def test_threat_signer_not_authorised_for_vo(tmp_path: Path, keys: dict[str, Path]) -> None:
    """An ATLAS key signing a CMS image."""
    image = make_image(tmp_path, edit=lambda labels: labels.update(vo=["cms"]))
    key_sign(image, keys["atlas"])
    verdict = verify(image, policy(tmp_path, keys))
    assert_denied(verdict, "signer-not-authorised")
    assert "atlas-vo (VO atlas)" in verdict.denials[0].message


def test_threat_endorser_in_labels_differs_from_signer(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    cms_keyid = load_signer(str(keys["cms"])).public_key.keyid

    def endorse_cms(labels: dict[str, Any]) -> None:
        labels["endorser"] = {"contact": "cms@example.org", "keyid": cms_keyid}

    image = make_image(tmp_path, edit=endorse_cms)
    key_sign(image, keys["atlas"])
    assert_denied(verify(image, policy(tmp_path, keys)), "endorser-mismatch")


def test_endorser_naming_the_signer_is_allowed(tmp_path: Path, keys: dict[str, Path]) -> None:
    keyid = load_signer(str(keys["atlas"])).public_key.keyid
    image = make_image(tmp_path, edit=lambda labels: labels.update(endorser={"keyid": keyid}))
    key_sign(image, keys["atlas"])
    assert verify(image, policy(tmp_path, keys)).allowed


def test_threat_vo_unknown_to_policy(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path, edit=lambda labels: labels.update(vo=["lhcb"]))
    key_sign(image, keys["atlas"])
    assert_denied(verify(image, policy(tmp_path, keys)), "vo-unknown")


def test_threshold_two_needs_vo_and_site_co_signing(tmp_path: Path, keys: dict[str, Path]) -> None:
    vos = {
        "atlas": vo_rules(
            key_signer("atlas-vo", keys["atlas"]), key_signer("site", keys["site"]), threshold=2
        )
    }
    trust = load_policy(write_policy(tmp_path / "site.yaml", vos))
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    assert_denied(verify(image, trust), "threshold-not-met")
    key_sign(image, keys["site"])
    verdict = verify(image, trust)
    assert verdict.allowed, verdict.render()
    assert verdict.signers == ["atlas: atlas-vo", "atlas: site"]


def test_stray_attestation_is_a_note_when_enough_signed(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    key_sign(image, keys["stranger"])
    verdict = verify(image, policy(tmp_path, keys))
    assert verdict.allowed, verdict.render()
    assert [(r.code, r.severity) for r in verdict.reasons] == [("untrusted-key", "note")]


def test_threat_wrong_predicate_type(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": read_labels(image),
    }
    envelope = sign_envelope(
        json.dumps(statement).encode(), PAYLOAD_TYPE, load_signer(str(keys["atlas"]))
    )
    (image / "other.dsse.json").write_text(json.dumps(envelope))
    assert_denied(verify(image, policy(tmp_path, keys)), "predicate-type")


def test_threat_wrong_payload_type(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    envelope = sign_envelope(b"hello", "text/plain", load_signer(str(keys["atlas"])))
    (image / "other.dsse.json").write_text(json.dumps(envelope))
    assert_denied(verify(image, policy(tmp_path, keys)), "payload-type")


def test_threat_unreadable_attestation(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    (image / "junk.dsse.json").write_text("{not json")
    assert_denied(verify(image, policy(tmp_path, keys)), "envelope-invalid")


# -- disk formats: check_safe runs before anything else reads the disk ----------


def test_threat_raw_disk_with_qcow2_header(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Format confusion: the labels say raw, the bytes are a qcow2 header."""
    image = make_image(tmp_path, disk=fx.qcow2(size=1 << 20))
    verdict = verify(image, policy(tmp_path, keys))
    assert_denied(verdict, "unsafe-disk")
    assert verdict.steps == ["layout", "format"]
    assert [r.detail for r in verdict.denials] == ["format-confusion"]


def test_threat_qcow2_backing_file(tmp_path: Path, keys: dict[str, Path]) -> None:
    def qcow2_labels(labels: dict[str, Any]) -> None:
        labels["disk"]["format"] = "qcow2"

    image = make_image(
        tmp_path, disk=fx.qcow2(size=1 << 20, backing=b"/etc/shadow"), edit=qcow2_labels
    )
    verdict = verify(image, policy(tmp_path, keys))
    assert_denied(verdict, "unsafe-disk")
    assert "qcow2-backing-file" in [r.detail for r in verdict.denials]
    assert verdict.steps == ["layout", "format"]


def test_threat_declared_format_differs_from_detected(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """The labels say qcow2; the bytes are raw: qemu would be told the wrong format."""

    def say_qcow2(labels: dict[str, Any]) -> None:
        labels["disk"]["format"] = "qcow2"

    image = make_image(tmp_path, edit=say_qcow2)
    verdict = verify(image, policy(tmp_path, keys))
    assert [r.detail for r in verdict.denials] == ["format-mismatch"]


def test_threat_virtual_size_over_the_policy_cap(tmp_path: Path, keys: dict[str, Path]) -> None:
    def qcow2_labels(labels: dict[str, Any]) -> None:
        labels["disk"]["format"] = "qcow2"

    image = make_image(tmp_path, disk=fx.qcow2(size=2 << 30), edit=qcow2_labels)
    vos = {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))}
    trust = load_policy(write_policy(tmp_path / "site.yaml", vos, max_virtual_size="1G"))
    verdict = verify(image, trust)
    assert [r.detail for r in verdict.denials] == ["virtual-size-too-large"]


def test_threat_format_not_allowed_by_policy(tmp_path: Path, keys: dict[str, Path]) -> None:
    vos = {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))}
    trust = load_policy(write_policy(tmp_path / "site.yaml", vos, formats=["qcow2"]))
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    verdict = verify(image, trust)
    assert [r.detail for r in verdict.denials] == ["format-not-allowed"]


def test_threat_disk_is_a_symlink(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    disk = image / "atlas-wn-debian12-1.0.raw"
    disk.unlink()
    disk.symlink_to("/etc/shadow")
    verdict = verify(image, policy(tmp_path, keys))
    assert [r.detail for r in verdict.denials] == ["not-regular-file"]


def test_threat_disk_file_name_escapes_directory(tmp_path: Path, keys: dict[str, Path]) -> None:
    def escape(labels: dict[str, Any]) -> None:
        labels["disk"]["file"] = "../../etc/shadow"

    verdict = verify(make_image(tmp_path, edit=escape), policy(tmp_path, keys))
    assert_denied(verdict, "layout")


def test_threat_labels_without_disk_format(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Without a declared format the disk would be probed: refused before it is read."""
    verdict = verify(
        make_image(tmp_path, edit=lambda labels: labels["disk"].pop("format")),
        policy(tmp_path, keys),
    )
    assert_denied(verdict, "layout")
    assert verdict.steps == ["layout"]


# -- labels against the policy ---------------------------------------------------


def signed(tmp_path: Path, keys: dict[str, Path], edit: Any) -> Path:
    image = make_image(tmp_path, edit=edit)
    key_sign(image, keys["atlas"])
    return image


def test_threat_expired_labels(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(
        tmp_path, keys, lambda labels: labels["image"].update(expires="2026-11-01T00:00:00Z")
    )
    assert_denied(verify(image, policy(tmp_path, keys)), "expired")


def test_threat_creation_time_in_the_future(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(
        tmp_path, keys, lambda labels: labels["image"].update(created="2027-01-01T00:00:00Z")
    )
    assert_denied(verify(image, policy(tmp_path, keys)), "created-in-future")


def test_image_older_than_max_age(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, lambda labels: None)
    trust = policy(tmp_path, keys, max_age="1d")
    assert verify(image, trust).allowed
    later = verify_image(image, trust, VerifyOptions(now=NOW + timedelta(days=1)))
    assert_denied(later, "too-old")


def test_labels_without_expiry(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, lambda labels: labels["image"].pop("expires"))
    assert_denied(verify(image, policy(tmp_path, keys)), "no-expiry")
    assert verify(image, policy(tmp_path, keys, require_expiry=False)).allowed


def test_distro_release_arch_not_allowed(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, lambda labels: labels["os"].update(arch="aarch64"))
    trust = policy(tmp_path, keys, distros=["ubuntu"], releases=["24.04"])
    verdict = verify(image, trust)
    assert verdict.codes == ["distro-not-allowed", "release-not-allowed", "arch-not-allowed"]


def test_root_policy_not_allowed_for_model(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, lambda labels: labels["trust"].update(root_policy="user"))
    assert_denied(verify(image, policy(tmp_path, keys)), "root-policy-not-allowed")


def test_failed_audit(tmp_path: Path, keys: dict[str, Path]) -> None:
    def failed(labels: dict[str, Any]) -> None:
        labels["audit"].update(passed=False, failed=["sshd-permit-root-login"])

    image = signed(tmp_path, keys, failed)
    assert_denied(verify(image, policy(tmp_path, keys)), "audit-failed")
    assert verify(image, policy(tmp_path, keys, require_audit=False)).allowed


def user_defined(labels: dict[str, Any]) -> None:
    labels["trust"].update(model="user-defined", root_policy="user")


def test_user_defined_refused_by_default(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, user_defined)
    assert_denied(verify(image, policy(tmp_path, keys)), "user-defined-refused")


def test_user_defined_needs_an_inspector(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, user_defined)
    trust = policy(tmp_path, keys, user_defined={"accept": True})
    verdict = verify(image, trust)
    assert_denied(verdict, "inspection-unavailable")
    assert verdict.steps[-1] == "inspection"


def test_user_defined_inspection_must_match_labels(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = signed(tmp_path, keys, user_defined)
    trust = policy(tmp_path, keys, user_defined={"accept": True})
    seen: list[tuple[Path, str]] = []

    def truthful(
        disk: Path, disk_format: str, labels: Mapping[str, Any], disk_fd: int | None = None
    ) -> dict[str, Any]:
        seen.append((disk, disk_format))
        return {"os.distro": "debian", "os.version": "12", "trust.root_policy": "user"}

    def lying(
        disk: Path, disk_format: str, labels: Mapping[str, Any], disk_fd: int | None = None
    ) -> dict[str, Any]:
        return {"os.distro": "ubuntu", "trust.root_policy": "user"}

    allowed = verify(image, trust, inspector=truthful)
    assert allowed.allowed
    assert allowed.inspected == ["os.distro", "os.version", "trust.root_policy"]
    text = allowed.render()
    assert "inspected: the disk matches its signed labels (3 facts" in text
    assert allowed.valid_until is not None
    assert f"valid until: {allowed.valid_until.isoformat()}" in text
    assert seen == [(image / "atlas-wn-debian12-1.0.raw", "raw")]
    verdict = verify(image, trust, inspector=lying)
    assert_denied(verdict, "inspection-mismatch")
    assert "os.distro" in verdict.denials[0].message


def test_an_inspection_that_cannot_read_the_disk_is_a_refusal(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    image = signed(tmp_path, keys, user_defined)
    trust = policy(tmp_path, keys, user_defined={"accept": True})

    def failing(
        disk: Path, disk_format: str, labels: Mapping[str, Any], disk_fd: int | None = None
    ) -> dict[str, Any]:
        raise InspectionError("the labels name no profile this host knows")

    verdict = verify(image, trust, inspector=failing)
    assert_denied(verdict, "inspection-mismatch")
    assert "no profile this host knows" in verdict.denials[0].message


def test_verify_never_writes_into_the_image(tmp_path: Path, keys: dict[str, Path]) -> None:
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in image.iterdir()}
    image.chmod(0o555)
    try:
        assert verify(image, policy(tmp_path, keys)).allowed
    finally:
        image.chmod(0o755)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in image.iterdir()} == before
