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

import yaml

from imagefactory.data import PROFILES_DIR
from imagefactory.errors import HardenError
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
    seal_truncate_under: tuple[str, ...]
    seal_remove: tuple[str, ...]
    credentials: tuple[str, ...]
    #: ``sha256:<hex>`` of the canonical profile content.
    digest: str


def _need(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise HardenError(f"{where}: .{key}: expected a {kind.__name__}, got {value!r:.80}")
    return value


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _need(data, key, list, where)
    if not all(isinstance(v, str) and v for v in value):
        raise HardenError(f"{where}: .{key}: expected a list of non-empty strings")
    return tuple(value)


def _abs_paths(values: tuple[str, ...], key: str, where: str) -> tuple[str, ...]:
    for value in values:
        if not value.startswith("/") or "/../" in f"{value}/":
            raise HardenError(f"{where}: .{key}: {value!r} is not an absolute guest path")
    return values


def parse_profile(data: Any, where: str) -> Profile:
    """Check a profile document and return it as a :class:`Profile`."""
    if not isinstance(data, dict):
        raise HardenError(f"{where}: a profile is a mapping")
    known = {
        "id", "version", "description", "ssh", "mounts", "required_mount_options", "scratch",
        "sysctl", "sysctl_keep_enabled", "keep_modules", "setuid_allowlist", "services",
        "seal", "credentials",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise HardenError(f"{where}: unknown keys: {', '.join(map(str, unknown))}")
    rules = []
    for key, spec in _need(data, "sysctl", dict, where).items():
        ok = isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], int)
        if not ok or spec[1] not in COMPARISONS:
            raise HardenError(f"{where}: .sysctl.{key}: expected [integer, eq|ge]")
        rules.append(SysctlRule(str(key), int(spec[0]), str(spec[1])))
    ssh = _need(data, "ssh", dict, where)
    settings = _need(ssh, "settings", dict, f"{where}: .ssh")
    mounts = _need(data, "mounts", dict, where)
    services = _need(data, "services", dict, where)
    seal = _need(data, "seal", dict, where)
    credentials = _need(data, "credentials", dict, where)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return Profile(
        id=_need(data, "id", str, where),
        version=str(_need(data, "version", str, where)),
        description=_need(data, "description", str, where),
        ssh_settings={str(k): str(v) for k, v in settings.items()},
        mounts={str(k): str(v) for k, v in mounts.items()},
        required_mount_options=_strings(data, "required_mount_options", where),
        scratch=_need(data, "scratch", str, where),
        sysctl=tuple(rules),
        sysctl_keep_enabled=_strings(data, "sysctl_keep_enabled", where),
        keep_modules=_strings(data, "keep_modules", where),
        setuid_allowlist=frozenset(
            _abs_paths(_strings(data, "setuid_allowlist", where), "setuid_allowlist", where)
        ),
        services_remove=_strings(services, "remove", f"{where}: .services"),
        services_required=_strings(services, "required", f"{where}: .services"),
        seal_truncate_under=_abs_paths(
            _strings(seal, "truncate_under", f"{where}: .seal"), "seal", where
        ),
        seal_remove=_abs_paths(_strings(seal, "remove", f"{where}: .seal"), "seal", where),
        credentials=_abs_paths(
            _strings(credentials, "forbidden", f"{where}: .credentials"), "credentials", where
        ),
        digest="sha256:" + hashlib.sha256(canonical).hexdigest(),
    )


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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HardenError(f"{path}: cannot read the profile: {exc}") from exc
    profile = parse_profile(data, str(path))
    if profile.id != profile_id:
        raise HardenError(f"{path}: .id is {profile.id!r}, but the file is named {profile_id!r}")
    return profile
