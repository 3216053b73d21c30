"""A site's trust policy as typed, frozen values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from securesystemslib.signer import SSlibKey

from imagefactory.vocab import Arch, DiskFormat, Distro, RootPolicy, WorkerNodeModel

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot


@dataclass(frozen=True)
class KeySigner:
    """A signer known by its public key."""

    name: str
    path: Path
    key: SSlibKey

    @property
    def keyid(self) -> str:
        return str(self.key.keyid)


@dataclass(frozen=True)
class SigstoreSigner:
    """A keyless signer: a certificate identity and OIDC issuer under one trust root.

    Exactly one of ``identity`` / ``identity_pattern`` and of ``issuer`` /
    ``issuer_pattern`` is set; a pattern must match the whole value.
    """

    name: str
    identity: str | None
    identity_pattern: re.Pattern[str] | None
    issuer: str | None
    issuer_pattern: re.Pattern[str] | None
    #: ``public-good`` or the path of a trusted root / client trust config file.
    trust_root: str
    #: The loaded root; ``None`` for the public-good instance (loaded when needed).
    root: TrustedRoot | None = field(default=None, compare=False)

    def matches_identity(self, identities: frozenset[str]) -> bool:
        if self.identity is not None:
            return self.identity in identities
        pattern = self.identity_pattern
        return pattern is not None and any(pattern.fullmatch(i) for i in identities)

    def matches_issuer(self, issuer: str | None) -> bool:
        if issuer is None:
            return False
        if self.issuer is not None:
            return self.issuer == issuer
        return self.issuer_pattern is not None and bool(self.issuer_pattern.fullmatch(issuer))

    def describe(self) -> str:
        who = self.identity or f"/{self.identity_pattern.pattern if self.identity_pattern else ''}/"
        by = self.issuer or f"/{self.issuer_pattern.pattern if self.issuer_pattern else ''}/"
        return f"{who} from issuer {by}"


TrustedSigner = KeySigner | SigstoreSigner


@dataclass(frozen=True)
class UserDefined:
    """Whether user-defined images are accepted, and the extra checks they get."""

    accept: bool = False
    inspect: bool = True
    max_age_days: int | None = None


@dataclass(frozen=True)
class VoPolicy:
    """What one VO's images must be, and who may sign them."""

    name: str
    signers: tuple[TrustedSigner, ...]
    threshold: int
    distros: frozenset[Distro]
    #: Release versions or codenames; empty means any release of an allowed distro.
    releases: frozenset[str]
    arches: frozenset[Arch]
    models: frozenset[WorkerNodeModel]
    root_policies: Mapping[WorkerNodeModel, frozenset[RootPolicy]]
    max_age_days: int | None
    require_expiry: bool
    require_audit: bool
    user_defined: UserDefined
    #: Inspect every image of this VO, not only user-defined ones.
    inspect: bool
    #: Fingerprints of the third-party apt repository keys its images may trust.
    repository_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TrustPolicy:
    """A site's whole trust policy."""

    source: Path
    formats: frozenset[DiskFormat]
    max_virtual_size: int
    vos: Mapping[str, VoPolicy]
    #: sha256 of the policy file and every key and trust root file it names.
    digest: str

    def signers(self) -> list[TrustedSigner]:
        """Every signer of every VO, once each (by name and VO)."""
        return [signer for vo in self.vos.values() for signer in vo.signers]
