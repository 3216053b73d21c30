"""Hardening profiles: data files, loaded and checked into a :class:`Profile`.

Profiles live in ``imagefactory/data/profiles/<id>.yaml``. A recipe selects one by
id (field ``hardening``). The profile's canonical content digest is part of the
build cache key: changing a profile rebuilds the images that use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.data import PROFILES_DIR
from imagefactory.errors import DiagnosticsError, HardenError
from imagefactory.fields import load_table
from imagefactory.fields.types import (
    INVALID,
    Checker,
    Count,
    Field,
    FieldType,
    ListOf,
    MapOf,
    Problem,
    Struct,
    Text,
)
from imagefactory.fields.yamlsource import Node, Scalar, Seq, describe, reported
from imagefactory.vocab import RootPolicy

PROFILE_DIR = PROFILES_DIR


def root_login_value(policy: RootPolicy) -> str:
    """What sshd's PermitRootLogin must say under ``policy``.

    Hardening sets it and the audit checks it: one definition for both.
    """
    return "no" if policy is RootPolicy.NONE else "prohibit-password"


DEFAULT_PROFILE = "worker-node-default"
COMPARISONS = ("eq", "ge")


@dataclass(frozen=True)
class SysctlRule:
    key: str
    value: int
    compare: str

    def satisfied_by(self, actual: int) -> bool:
        return actual == self.value if self.compare == "eq" else actual >= self.value

    def describe(self) -> str:
        return f"{self.key} {'=' if self.compare == 'eq' else '>='} {self.value}"


@dataclass(frozen=True)
class Profile:
    """A checked hardening profile."""

    id: str
    version: str
    description: str
    ssh_settings: Mapping[str, str]
    mounts: Mapping[str, str]
    required_mount_options: tuple[str, ...]
    scratch: str
    sysctl: tuple[SysctlRule, ...]
    sysctl_keep_enabled: tuple[str, ...]
    keep_modules: tuple[str, ...]
    setuid_allowlist: frozenset[str]
    services_remove: tuple[str, ...]
    services_required: tuple[str, ...]
    services_allowed: tuple[str, ...]
    seal_truncate_under: tuple[str, ...]
    seal_remove: tuple[str, ...]
    credentials: tuple[str, ...]
    #: ``sha256:<hex>`` of the canonical profile content.
    digest: str


class _SysctlSpec(FieldType):
    """``[value, comparison]``: a whole number and ``eq`` or ``ge``."""

    label = "[integer, eq|ge]"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if isinstance(node, Seq) and len(node.items) == 2:
            value = Count(0, 2**31 - 1).parse(node.items[0], ck, partial)
            compare = Text("eq or ge", pattern=r"^(eq|ge)$").parse(node.items[1], ck, partial)
            if value is INVALID or compare is INVALID:
                return INVALID
            return (value, compare)
        if not reported(node):
            ck.error(node.mark, f"expected [integer, eq|ge], found {describe(node)}")
        return INVALID


def _guest_path(value: str, node: Scalar, ck: Checker) -> str:
    if not value.startswith("/") or "/../" in f"{value}/" or "//" in value:
        raise Problem(f"expected an absolute, normalised guest path, found {value!r}")
    return value


_NAME = Text("a name", max_length=256)
_PATHS = ListOf(Text("an absolute guest path", max_length=4096, check=_guest_path))
_NAMES = ListOf(_NAME)

#: The hardening profile's field table.
PROFILE = Struct(
    fields=(
        Field("id", Text("a profile id", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$"), "", required=True),
        Field("version", Text("a version", max_length=32, numbers=True), "", required=True),
        Field("description", Text("a description", max_length=1024), "", required=True),
        Field(
            "ssh",
            Struct(
                fields=(Field("settings", MapOf(_NAME, _NAME), "sshd settings", required=True),)
            ),
            "sshd settings written as a drop-in when sshd is installed.",
            required=True,
        ),
        Field("mounts", MapOf(_NAME, _NAME), "fstab entries: mount point -> spec", required=True),
        Field("required_mount_options", _NAMES, "Options every listed mount must have."),
        Field("scratch", Text("a guest path", check=_guest_path), "", required=True),
        Field("sysctl", MapOf(_NAME, _SysctlSpec()), "sysctl key -> [value, eq|ge]", required=True),
        Field("sysctl_keep_enabled", _NAMES, "sysctls that must not be switched off."),
        Field("keep_modules", _NAMES, "Kernel modules that must stay loadable."),
        Field("setuid_allowlist", _PATHS, "The only files that may stay setuid/setgid."),
        Field(
            "services",
            Struct(
                fields=(
                    Field("remove", _NAMES, "Units disabled and masked."),
                    Field("required", _NAMES, "Units that must be enabled."),
                    Field(
                        "allowed",
                        _NAMES,
                        "Units (fnmatch patterns) that may be enabled: the audit lists every"
                        " enabled unit and warns for others, and fails for a socket unit"
                        " that listens without being allowed.",
                    ),
                )
            ),
            "systemd units.",
            required=True,
        ),
        Field(
            "seal",
            Struct(
                fields=(
                    Field("truncate_under", _PATHS, "Files emptied under these trees."),
                    Field("remove", _PATHS, "Files removed."),
                )
            ),
            "What sealing the image clears.",
            required=True,
        ),
        Field(
            "credentials",
            Struct(fields=(Field("forbidden", _PATHS, "Files that must not exist."),)),
            "Credentials that must not be baked in.",
            required=True,
        ),
    )
)


class ProfileError(DiagnosticsError):
    """A hardening profile file is invalid."""

    def __init__(self, diagnostics: list[Any]) -> None:
        super().__init__("invalid hardening profile", diagnostics)


def _profile(values: dict[str, Any]) -> Profile:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
    return Profile(
        id=values["id"],
        version=str(values["version"]),
        description=values["description"],
        ssh_settings=dict(values["ssh"]["settings"]),
        mounts=dict(values["mounts"]),
        required_mount_options=tuple(values["required_mount_options"]),
        scratch=values["scratch"],
        sysctl=tuple(SysctlRule(k, v, c) for k, (v, c) in values["sysctl"].items()),
        sysctl_keep_enabled=tuple(values["sysctl_keep_enabled"]),
        keep_modules=tuple(values["keep_modules"]),
        setuid_allowlist=frozenset(values["setuid_allowlist"]),
        services_remove=tuple(values["services"]["remove"]),
        services_required=tuple(values["services"]["required"]),
        services_allowed=tuple(values["services"]["allowed"]),
        seal_truncate_under=tuple(values["seal"]["truncate_under"]),
        seal_remove=tuple(values["seal"]["remove"]),
        credentials=tuple(values["credentials"]["forbidden"]),
        digest="sha256:" + hashlib.sha256(canonical).hexdigest(),
    )


def parse_profile(path: Path) -> Profile:
    """Check the profile file at ``path`` (every problem at file:line:column)."""
    return _profile(load_table(path, PROFILE, ProfileError))


def available_profiles(directory: Path = PROFILE_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(profile_id: str, directory: Path = PROFILE_DIR) -> Profile:
    """The profile named ``profile_id`` from ``directory``."""
    path = directory / f"{profile_id}.yaml"
    if "/" in profile_id or not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise HardenError(
            f"unknown hardening profile {profile_id!r}", hint=f"known profiles: {known}"
        )
    profile = parse_profile(path)
    if profile.id != profile_id:
        raise HardenError(f"{path}: .id is {profile.id!r}, but the file is named {profile_id!r}")
    return profile
