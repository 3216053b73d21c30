"""A site's trust policy: who may sign which VO's images, and what those images must be.

:func:`load_policy` reads the YAML policy file with the field-table engine
(:mod:`imagefactory.fields`) that also reads recipes, so a wrong policy is
reported like a wrong recipe: every problem at once, each at its place, with
"did you mean" for misspelt keys and values. Public keys and trusted roots the
policy names are read and checked while loading.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from imagefactory.errors import DiagnosticsError
from imagefactory.fields import load_table
from imagefactory.trust.example import EXAMPLE_POLICY
from imagefactory.trust.fields import POLICY, LoadedFile
from imagefactory.trust.model import (
    KeySigner,
    SigstoreSigner,
    TrustedSigner,
    TrustPolicy,
    UserDefined,
    VoPolicy,
)
from imagefactory.vocab import Arch, DiskFormat, Distro, RootPolicy, WorkerNodeModel

__all__ = [
    "EXAMPLE_POLICY",
    "KeySigner",
    "PolicyError",
    "SigstoreSigner",
    "TrustPolicy",
    "TrustedSigner",
    "VoPolicy",
    "load_policy",
]


class PolicyError(DiagnosticsError):
    """A trust policy file is invalid."""

    def __init__(self, diagnostics: list[Any]) -> None:
        super().__init__("invalid trust policy", diagnostics)


def load_policy(path: Path, display: str | None = None) -> TrustPolicy:
    """Load and check the trust policy at ``path``.

    Raises :class:`PolicyError` listing every problem, sorted by place.
    """
    path = Path(path)
    values = load_table(path, POLICY, PolicyError, display=display)
    return _build(path, values)


def _build(path: Path, values: dict[str, Any]) -> TrustPolicy:
    digest = hashlib.sha256(path.read_bytes())
    vos = {}
    for name, vo in values["vos"].items():
        signers: list[TrustedSigner] = []
        for spec in vo["signers"]:
            key = spec.get("key")
            if isinstance(key, LoadedFile):
                digest.update(f"\0key\0{key.sha256}".encode())
                signers.append(KeySigner(spec["name"], key.path, key.value))
                continue
            sig = spec["sigstore"]
            root = sig["trust_root"]
            if isinstance(root, LoadedFile):
                digest.update(f"\0root\0{root.sha256}".encode())
            signers.append(
                SigstoreSigner(
                    name=spec["name"],
                    identity=sig.get("identity"),
                    identity_pattern=sig.get("identity_pattern"),
                    issuer=sig.get("issuer"),
                    issuer_pattern=sig.get("issuer_pattern"),
                    trust_root=str(root.path) if isinstance(root, LoadedFile) else root,
                    root=root.value if isinstance(root, LoadedFile) else None,
                )
            )
        user = vo["user_defined"]
        vos[name] = VoPolicy(
            name=name,
            signers=tuple(signers),
            threshold=vo["threshold"],
            distros=frozenset(Distro(d) for d in vo["distros"]),
            releases=frozenset(vo["releases"]),
            arches=frozenset(Arch(a) for a in vo["arches"]),
            models=frozenset(WorkerNodeModel(m) for m in vo["models"]),
            root_policies={
                WorkerNodeModel(model): frozenset(RootPolicy(p) for p in policies)
                for model, policies in vo["root_policies"].items()
            },
            max_age_days=vo.get("max_age"),
            require_expiry=vo["require_expiry"],
            require_audit=vo["require_audit"],
            user_defined=UserDefined(user["accept"], user["inspect"], user.get("max_age")),
            inspect=vo["inspect"],
            repository_keys=frozenset(vo["repository_keys"]),
        )
    return TrustPolicy(
        source=path,
        formats=frozenset(DiskFormat(f) for f in values["formats"]),
        max_virtual_size=values["max_virtual_size"],
        vos=vos,
        digest=digest.hexdigest(),
    )
