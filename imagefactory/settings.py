"""The build host's own configuration (trusted, unlike recipes).

Looked up in this order: ``--settings FILE``, ``$IMAGEFACTORY_SETTINGS``,
``/etc/imagefactory/settings.yaml`` (if it exists), built-in defaults.
Mirrors may also come from the environment (``IMAGEFACTORY_DEBIAN_MIRROR``,
``IMAGEFACTORY_DEBIAN_SECURITY_MIRROR``, ``IMAGEFACTORY_UBUNTU_MIRROR``), which
wins over the file; what is still unset is read from the host's apt sources,
then from diskimage-builder's own defaults (see :mod:`imagefactory.mirrors`).

Example::

    mirrors:
      debian: http://mirror.example.org/debian
      debian-security: http://mirror.example.org/debian-security
      ubuntu: http://mirror.example.org/ubuntu
    keyrings:
      ubuntu: /usr/share/keyrings/ubuntu-archive-keyring.gpg
    build:
      output_dir: images
      cache_dir: /var/cache/imagefactory
      allow_scripts: false
      allowed_elements: [cloud-init, growroot]
      accel: auto            # auto | kvm | tcg
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from imagefactory.errors import SettingsError
from imagefactory.recipe import DEFAULT_ALLOWED_ELEMENTS, BuildLimits

SYSTEM_SETTINGS = Path("/etc/imagefactory/settings.yaml")
MIRROR_KEYS = ("debian", "debian-security", "ubuntu")
MIRROR_ENV = {
    "debian": "IMAGEFACTORY_DEBIAN_MIRROR",
    "debian-security": "IMAGEFACTORY_DEBIAN_SECURITY_MIRROR",
    "ubuntu": "IMAGEFACTORY_UBUNTU_MIRROR",
}
ACCEL_CHOICES = ("auto", "kvm", "tcg")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).absolute() / "imagefactory"


@dataclass(frozen=True)
class Settings:
    """Validated host settings."""

    source: Path | None = None
    mirrors: Mapping[str, str] = field(default_factory=dict)
    keyrings: Mapping[str, Path] = field(default_factory=dict)
    output_dir: Path = Path("images")
    cache_dir: Path = field(default_factory=_default_cache_dir)
    allow_scripts: bool = False
    allowed_elements: frozenset[str] = DEFAULT_ALLOWED_ELEMENTS
    accel: str = "auto"

    def build_limits(self, include_roots: tuple[Path, ...] = ()) -> BuildLimits:
        """The rules untrusted recipes are held to on this host."""
        return BuildLimits(
            allow_scripts=self.allow_scripts,
            allowed_elements=self.allowed_elements,
            include_roots=include_roots,
        )

    @property
    def dib_image_cache(self) -> Path:
        """Where diskimage-builder keeps the debootstrap tarballs."""
        return self.cache_dir / "dib"


def load_settings(path: Path | None = None) -> Settings:
    """Load the settings file that applies (see the module docstring)."""
    if path is None and os.environ.get("IMAGEFACTORY_SETTINGS"):
        path = Path(os.environ["IMAGEFACTORY_SETTINGS"])
    if path is None and SYSTEM_SETTINGS.exists():
        path = SYSTEM_SETTINGS
    if path is not None:
        path = path.absolute()
    data: Mapping[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read settings: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping")
        data = loaded
    settings = _parse(data, path)
    env_mirrors = {k: os.environ[v] for k, v in MIRROR_ENV.items() if os.environ.get(v)}
    if env_mirrors:
        merged = dict(settings.mirrors)
        merged.update(_check_mirrors(env_mirrors, "environment"))
        settings = replace(settings, mirrors=merged)
    return settings


def _parse(data: Mapping[str, Any], path: Path | None) -> Settings:
    where = str(path) if path else "settings"
    _only_keys(data, {"mirrors", "keyrings", "build"}, where, "")
    mirrors = _check_mirrors(_mapping(data.get("mirrors", {}), where, ".mirrors"), where)
    keyrings_raw = _mapping(data.get("keyrings", {}), where, ".keyrings")
    _only_keys(keyrings_raw, {"debian", "ubuntu"}, where, ".keyrings")
    # Relative paths in a settings file are relative to that file; the defaults
    # to the working directory. Either way they are made absolute here, once.
    here = path.parent if path is not None else Path.cwd()
    keyrings = {k: here / str(v) for k, v in keyrings_raw.items()}
    build = _mapping(data.get("build", {}), where, ".build")
    _only_keys(
        build,
        {"output_dir", "cache_dir", "allow_scripts", "allowed_elements", "accel"},
        where,
        ".build",
    )
    defaults = Settings()
    accel = str(build.get("accel", defaults.accel))
    if accel not in ACCEL_CHOICES:
        raise SettingsError(
            f"{where}: .build.accel: expected one of {', '.join(ACCEL_CHOICES)}, got {accel!r}"
        )
    allow_scripts = build.get("allow_scripts", False)
    if not isinstance(allow_scripts, bool):
        raise SettingsError(f"{where}: .build.allow_scripts: expected true or false")
    elements = build.get("allowed_elements")
    if elements is not None and not (
        isinstance(elements, list) and all(isinstance(e, str) for e in elements)
    ):
        raise SettingsError(f"{where}: .build.allowed_elements: expected a list of names")
    return Settings(
        source=path,
        mirrors=mirrors,
        keyrings=keyrings,
        output_dir=here / str(build.get("output_dir", defaults.output_dir)),
        cache_dir=here / str(build["cache_dir"]) if "cache_dir" in build else defaults.cache_dir,
        allow_scripts=allow_scripts,
        allowed_elements=(
            frozenset(elements) if elements is not None else defaults.allowed_elements
        ),
        accel=accel,
    )


def _mapping(value: Any, where: str, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: {key}: expected a mapping")
    return value


def _only_keys(data: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise SettingsError(
            f"{where}: {prefix or '.'}: unknown key(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(allowed))}"
        )


def _check_mirrors(mirrors: Mapping[str, Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in mirrors.items():
        if key not in MIRROR_KEYS:
            raise SettingsError(
                f"{where}: .mirrors.{key}: unknown mirror; expected {', '.join(MIRROR_KEYS)}"
            )
        url = str(value).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"{where}: .mirrors.{key}: expected an http(s) URL, got {url!r}")
        out[key] = url
    return out
