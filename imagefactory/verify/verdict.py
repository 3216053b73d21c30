"""The outcome of verifying an image: allow or deny, with every reason found."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from imagefactory.model.reason import DENY, NOTE, Reason, printable, register_codes

__all__ = ["DENY", "NOTE", "REASONS", "Reason", "Verdict"]

REASONS: Mapping[str, str] = MappingProxyType(
    {
        "layout": "the image directory lacks a file or has an unusable one",
        "unsafe-disk": "the disk's headers are refused (see the detail code from diskformat)",
        "labels-digest-mismatch": "the files' digests or size differ from what labels.json says",
        "unsigned": "the image carries no attestation",
        "envelope-invalid": "an attestation file is not a DSSE envelope",
        "bundle-invalid": "an attestation file is not a Sigstore bundle",
        "untrusted-key": "signed only by keys the policy does not trust",
        "untrusted-identity": "signed by a Sigstore identity the policy does not trust",
        "wrong-issuer": "the signer's identity is trusted, but it came from another OIDC issuer",
        "untrusted-root": "the certificate does not chain to the signer's trusted root",
        "signature-invalid": "a signature does not verify over the attested bytes",
        "payload-type": "the DSSE payload is not an in-toto statement",
        "statement-invalid": "the payload is not an in-toto Statement v1",
        "predicate-type": "the statement's predicate type is not imagefactory labels v1",
        "subject-missing": "the statement does not name one of the image's files",
        "subject-mismatch": "a file's digest differs from the statement's subject",
        "predicate-mismatch": "the signed labels differ from labels.json",
        "vo-missing": "the labels name no VO",
        "vo-unknown": "the labels name a VO the policy does not know",
        "signer-not-authorised": "valid signatures, but by no signer trusted for this VO",
        "threshold-not-met": "fewer trusted signers for the VO than its threshold",
        "endorser-mismatch": "the endorser named in the labels is not who signed",
        "labels-invalid": "a label the policy needs is missing or malformed",
        "distro-not-allowed": "the distribution is not allowed for the VO",
        "release-not-allowed": "the release is not allowed for the VO",
        "arch-not-allowed": "the architecture is not allowed for the VO",
        "model-not-allowed": "the worker-node model is not allowed for the VO",
        "user-defined-refused": "the VO accepts no user-defined images",
        "root-policy-not-allowed": "the root policy is not acceptable for the model",
        "no-expiry": "the labels carry no expiry and the VO requires one",
        "expired": "the labels' expiry has passed",
        "too-old": "the image is older than the VO's maximum age",
        "created-in-future": "the labels' creation time is in the future",
        "audit-failed": "the hardening audit did not pass or is missing",
        "repository-not-allowed": "the image trusts an apt repository key the VO does not list",
        "inspection-unavailable": "the policy requires a fresh inspection and none is available",
        "inspection-mismatch": "the inspected disk differs from its signed labels",
        "gate-unverifiable-disk": "a disk the boot gate cannot map to a verified image",
        "gate-outside-store": "a disk (or an overlay's base) lies outside the image store",
        "gate-format-mismatch": "the hypervisor would open a disk in another format than signed",
        "gate-overlay": "a copy-on-write overlay that is not a plain qcow2 over a store image",
        "gate-relabel": "a disk libvirt would relabel (chown the store's image to its qemu user)",
        "gate-direct-kernel": "a kernel or initrd outside any verified disk would boot",
        "gate-invalid-request": "the domain XML or command line cannot be read safely",
        "gate-error": "the gate could not decide (bad policy, unreadable store); refused",
        "gate-unknown-option": "the command line has an option the gate does not know",
        "gate-refused-option": "an option or value outside the gate's allowlist",
        "gate-untrusted-dir": "the store or a directory above an image is writable by others",
        "gate-retired": "the image was retired from the store (revoked, superseded, ...)",
        "gate-not-hypervisor": "the command is not a hypervisor named in the settings",
        "disk-too-large": "the disk file is larger than the policy's cap",
    }
)
"""Every reason code a verdict can carry, with its one-line meaning."""

register_codes(REASONS)


@dataclass
class Verdict:
    """Allow or deny one image, with the reasons, who signed, and how far verify got."""

    image: Path
    reasons: list[Reason] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    #: "vo: signer" for every trusted signer whose attestation counted.
    signers: list[str] = field(default_factory=list)
    #: The answer came from the verified cache.
    cached: bool = False
    #: After this time the verdict no longer holds (expiry, maximum age).
    valid_until: datetime | None = None
    #: The label keys a fresh inspection of the disk confirmed (empty: none ran).
    inspected: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return bool(self.steps) and not self.denials

    @property
    def denials(self) -> list[Reason]:
        return [r for r in self.reasons if r.severity == DENY]

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.denials]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "allowed": self.allowed,
            "verdict": "allow" if self.allowed else "deny",
            "reasons": [r.to_dict() for r in self.reasons],
            "steps": list(self.steps),
            "signers": list(self.signers),
            "cached": self.cached,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "inspected": list(self.inspected),
        }

    def render(self) -> str:
        head = "ALLOW" if self.allowed else "DENY"
        lines = [f"{head}: {printable(str(self.image))}"]
        if self.signers:
            lines.append("  signed by: " + ", ".join(self.signers))
        if self.allowed and self.valid_until is not None:
            lines.append(f"  valid until: {self.valid_until.isoformat()}")
        if self.allowed and self.inspected:
            lines.append(
                f"  inspected: the disk matches its signed labels ({len(self.inspected)} facts:"
                f" {', '.join(self.inspected)})"
            )
        lines += ["  " + r.render() for r in self.reasons]
        if self.cached:
            lines.append("  (verified earlier; unchanged since, answered from the verified cache)")
        return "\n".join(lines)
