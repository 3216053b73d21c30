"""Every trust policy setting, defined once (the same field table machinery as recipes)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.attest.keyless import PUBLIC_GOOD, KeylessError, load_trusted_root
from imagefactory.attest.keys import KeyFileError, load_public_key
from imagefactory.fields.types import (
    Checker,
    Choice,
    Count,
    Field,
    Flag,
    ListOf,
    MapOf,
    Problem,
    Rule,
    Struct,
    Text,
    did_you_mean,
)
from imagefactory.fields.values import DURATION_PATTERN, SIZE_PATTERN, VO_PATTERN, to_days, to_size
from imagefactory.fields.yamlsource import Map, Node, Scalar, Seq
from imagefactory.fsutil import read_bounded
from imagefactory.pgpkey import FINGERPRINT_PATTERN
from imagefactory.vocab import (
    ARCH_ALIASES,
    Arch,
    DiskFormat,
    Distro,
    RootPolicy,
    WorkerNodeModel,
)

MAX_SIGNERS = 64


@dataclass(frozen=True)
class LoadedFile:
    """A file the policy names, read once: where, its sha256, and what it holds."""

    path: Path
    sha256: str
    value: Any


def _relative(text: str, node: Scalar) -> Path:
    path = Path(text)
    return path if path.is_absolute() else node.mark.origin.path.parent / path


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(read_bounded(path)).hexdigest()
    except OSError as exc:
        raise Problem(f"cannot read {path}: {exc.strerror}") from exc


def check_public_key(text: str, node: Scalar, ck: Checker) -> LoadedFile:
    path = _relative(text, node)
    digest = _file_digest(path)
    try:
        return LoadedFile(path, digest, load_public_key(path))
    except KeyFileError as exc:
        raise Problem(
            exc.message, "give a PEM public key, e.g. from 'imagefactory key generate'"
        ) from exc


def check_trust_root(text: str, node: Scalar, ck: Checker) -> LoadedFile | str:
    if text == PUBLIC_GOOD:
        return text
    path = _relative(text, node)
    digest = _file_digest(path)
    try:
        return LoadedFile(path, digest, load_trusted_root(path))
    except KeylessError as exc:
        raise Problem(exc.message, f"give '{PUBLIC_GOOD}' or a trusted root JSON file") from exc


def to_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise Problem(f"not a valid regular expression: {exc}") from exc


def _value_mark(node: Map, key: str) -> Node:
    entry = node.get(key)
    return entry.value if entry is not None else node


def suggest_vo(text: str) -> str | None:
    """VO names are lower case (``cms``, not ``CMS``), as the recipes and labels spell them."""
    folded = text.strip().lower()
    return f"did you mean '{folded}'?" if re.fullmatch(VO_PATTERN, folded) else None


def rule_releases(values: dict[str, Any], node: Map, ck: Checker) -> None:
    """Each release must be one of an allowed distro: ``12.0`` or ``"14"`` would deny everything."""
    distros = values.get("distros")
    entry = node.get("releases")
    if not isinstance(distros, list) or entry is None or not isinstance(entry.value, Seq):
        return
    known = [d for d in distros if isinstance(d, Distro)]
    names = [name for d in known for r in d.releases for name in (r.version, r.codename)]
    for item in entry.value.items:
        if not isinstance(item, Scalar) or item.kind not in ("string", "integer", "number"):
            continue  # the field's own check reported it
        text = item.raw if item.kind != "string" else str(item.value)
        if any(d.release(text) for d in known):
            continue
        listed = "; ".join(
            f"{d}: " + ", ".join(f"{r.version} ({r.codename})" for r in d.releases) for d in known
        )
        ck.error(
            item.mark,
            f"expected a release of the allowed distros ({listed}); found '{text}'",
            _version_hint(text, names) or did_you_mean(text, names),
        )


def _version_hint(text: str, names: list[str]) -> str | None:
    # YAML reads 12.0 as a number; its release is "12".
    head = text.split(".", maxsplit=1)[0] if text.endswith(".0") else None
    return f"did you mean '{head}'?" if head in names else None


def rule_threshold(values: dict[str, Any], node: Map, ck: Checker) -> None:
    threshold, signers = values.get("threshold"), values.get("signers")
    if isinstance(threshold, int) and isinstance(signers, list) and threshold > len(signers):
        ck.error(
            _value_mark(node, "threshold").mark,
            f"threshold {threshold} needs at least {threshold} signers, found {len(signers)}",
        )


def rule_user_defined(values: dict[str, Any], node: Map, ck: Checker) -> None:
    models, user = values.get("models"), values.get("user_defined")
    if (
        isinstance(models, list)
        and WorkerNodeModel.USER_DEFINED in models
        and isinstance(user, dict)
        and not user.get("accept")
    ):
        ck.error(
            _value_mark(node, "models").mark,
            "models lists user-defined but user_defined.accept is false",
            "accept user-defined images with 'user_defined: {accept: true}' and drop it here",
        )


SIGSTORE = Struct(
    expects="a Sigstore identity (identity or identity_pattern, issuer or issuer_pattern)",
    fields=(
        Field("identity", Text("a certificate identity", max_length=1024), "The exact SAN."),
        Field(
            "identity_pattern",
            Text("a regular expression", max_length=1024, convert=to_pattern),
            "A regular expression the whole SAN must match.",
        ),
        Field("issuer", Text("an OIDC issuer URL", max_length=1024), "The exact OIDC issuer."),
        Field(
            "issuer_pattern",
            Text("a regular expression", max_length=1024, convert=to_pattern),
            "A regular expression the whole OIDC issuer must match.",
        ),
        Field(
            "trust_root",
            Text(
                f"'{PUBLIC_GOOD}' or a trusted root file",
                max_length=4096,
                check=check_trust_root,
            ),
            "The Sigstore instance whose certificates count: 'public-good', or a trusted"
            " root (or client trust config) JSON file, relative to the policy.",
            default=PUBLIC_GOOD,
        ),
    ),
    exactly_one=(("identity", "identity_pattern"), ("issuer", "issuer_pattern")),
)

SIGNER = Struct(
    expects="a signer (name and key or sigstore)",
    fields=(
        Field(
            "name",
            Text("a signer name", pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"),
            "Shown in verdicts.",
            required=True,
        ),
        Field(
            "key",
            Text("a PEM public key file", max_length=4096, check=check_public_key),
            "A public key file, relative to the policy (key-based DSSE attestations).",
        ),
        Field("sigstore", SIGSTORE, "A keyless signer (Sigstore bundles)."),
    ),
    exactly_one=(("key", "sigstore"),),
)

ROOT_POLICIES = Struct(
    expects="a mapping from worker-node model to root policies",
    fields=tuple(
        Field(
            model.value,
            ListOf(Choice(RootPolicy)),
            f"Root policies acceptable for {model.value} images.",
            default=["none", "site-admin", "user"]
            if model is WorkerNodeModel.USER_DEFINED
            else ["none", "site-admin"],
        )
        for model in WorkerNodeModel
    ),
)

USER_DEFINED = Struct(
    fields=(
        Field("accept", Flag(), "Whether user-defined images are accepted at all.", default=False),
        Field(
            "inspect",
            Flag(),
            "Inspect them afresh (read-only) and require the observed facts to match the labels.",
            default=True,
        ),
        Field(
            "max_age",
            Text("a duration like '7d'", pattern=DURATION_PATTERN, convert=to_days),
            "A shorter maximum age for user-defined images.",
        ),
    ),
)

VO = Struct(
    expects="a VO's policy (a mapping with signers)",
    fields=(
        Field(
            "signers", ListOf(SIGNER, key="name"), "Who may sign this VO's images.", required=True
        ),
        Field(
            "threshold",
            Count(1, MAX_SIGNERS),
            "How many different trusted signers must have signed (VO and site co-signing).",
            default=1,
        ),
        Field(
            "distros",
            ListOf(Choice(Distro)),
            "Allowed distributions.",
            default=[d.value for d in Distro],
        ),
        Field(
            "releases",
            ListOf(Text("a release version or codename", max_length=32, numbers=True)),
            "Allowed releases (version or codename); empty allows every release.",
        ),
        Field(
            "arches",
            ListOf(Choice(Arch, aliases=ARCH_ALIASES)),
            "Allowed architectures.",
            default=["x86_64"],
        ),
        Field(
            "models",
            ListOf(Choice(WorkerNodeModel)),
            "Allowed worker-node models.",
            default=["non-persistent"],
        ),
        Field("root_policies", ROOT_POLICIES, "Which root policies are acceptable per model."),
        Field(
            "max_age",
            Text("a duration like '30d' or '4w'", pattern=DURATION_PATTERN, convert=to_days),
            "Refuse images created longer ago than this.",
        ),
        Field("require_expiry", Flag(), "Refuse labels without an expiry date.", default=True),
        Field(
            "require_audit",
            Flag(),
            "Refuse images whose hardening audit did not pass.",
            default=True,
        ),
        Field("user_defined", USER_DEFINED, "User-defined images."),
        Field(
            "repository_keys",
            ListOf(
                Text(
                    "a 40-hex-digit OpenPGP fingerprint",
                    pattern=FINGERPRINT_PATTERN,
                    convert=str.upper,
                )
            ),
            "The third-party apt repository keys this VO's images may trust (the labels'"
            " `repositories`); none by default: an image that adds a repository with"
            " another key is denied.",
        ),
        Field(
            "inspect",
            Flag(),
            "Inspect every image of this VO afresh, not only user-defined ones.",
            default=False,
        ),
    ),
    rules=(
        Rule("`threshold` cannot exceed the number of `signers`.", rule_threshold),
        Rule("Each of `releases` must be a release of one of `distros`.", rule_releases),
        Rule(
            "User-defined images are accepted through `user_defined.accept`, not `models`.",
            rule_user_defined,
        ),
    ),
)

POLICY = Struct(
    expects="a trust policy (a mapping with vos)",
    fields=(
        Field(
            "formats",
            ListOf(Choice(DiskFormat)),
            "Disk formats this host boots.",
            default=["qcow2", "raw"],
        ),
        Field(
            "max_virtual_size",
            Text("a size like '64G'", pattern=SIZE_PATTERN, convert=to_size),
            "The largest virtual disk size accepted.",
            default="256G",
        ),
        Field(
            "vos",
            MapOf(
                Text("a VO name like 'atlas'", pattern=VO_PATTERN, suggest=suggest_vo),
                VO,
                label="mapping of VO name to its policy",
            ),
            "Per VO: trusted signers and what its images must be.",
            required=True,
        ),
    ),
)
