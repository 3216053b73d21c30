"""The resolved recipe as typed, frozen values, and its canonical form and digest."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from imagefactory.recipe.rules import KeyFile, SourceFile
from imagefactory.vocab import (
    Arch,
    BootMode,
    DiskFormat,
    Distro,
    FsAccess,
    Release,
    RootPolicy,
    ScriptPhase,
    WorkerNodeModel,
)


@dataclass(frozen=True)
class Base:
    distro: Distro
    #: The release's codename ("bookworm").
    release: str
    #: The release's version number ("12").
    version: str
    arch: Arch


@dataclass(frozen=True)
class FileSpec:
    path: PurePosixPath
    content: bytes
    mode: int
    owner: str
    group: str

    def canonical(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "mode": f"{self.mode:04o}",
            "owner": self.owner,
            "group": self.group,
            "size": len(self.content),
            "sha256": hashlib.sha256(self.content).hexdigest(),
        }
        try:
            data["content"] = self.content.decode("utf-8")
        except UnicodeDecodeError:
            data["content_base64"] = base64.b64encode(self.content).decode("ascii")
        return data


@dataclass(frozen=True)
class Services:
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Script:
    name: str
    phase: ScriptPhase
    content: str


@dataclass(frozen=True)
class Repository:
    """A third-party apt repository with its pinned signing key."""

    name: str
    url: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    #: The pinned v4 fingerprint (upper-case hex): from the recipe, or of the key file.
    fingerprint: str
    #: The key as binary OpenPGP packets, if the recipe ships it (``key.file``);
    #: ``None``: the build host's ``build.repository_keys`` must hold it.
    key: bytes | None
    #: The architectures it serves (empty: unrestricted).
    arch: tuple[Arch, ...] = ()

    def canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "suites": list(self.suites),
            "components": list(self.components),
            "fingerprint": self.fingerprint,
            "key_sha256": hashlib.sha256(self.key).hexdigest() if self.key is not None else None,
            "arch": [a.value for a in self.arch],
        }


@dataclass(frozen=True)
class Disk:
    #: Bytes.
    size: int
    formats: tuple[DiskFormat, ...]
    #: The qcow2 is written with compressed (zlib) clusters.
    compress: bool = False

    def canonical(self) -> dict[str, Any]:
        data: dict[str, Any] = {"size": self.size, "formats": [f.value for f in self.formats]}
        if self.compress:
            # Only when set: an uncompressed recipe keeps its digest (and cache key).
            data["compress"] = True
        return data


@dataclass(frozen=True)
class PackagePlace:
    """A ``packages`` entry (``name`` or ``name=version``) and where it is written.

    Kept so a check that runs later (against the archive's indexes) can point
    at the recipe line like the recipe's own checks do.
    """

    entry: str
    file: str
    line: int
    column: int
    path: str


@dataclass(frozen=True)
class Inherited:
    """What a recipe's parents (the recipes it ``extends``, combined) contribute.

    The build's OS-tree layer is made of it (:mod:`imagefactory.builder.layer`):
    the parents' ``packages`` entries and the names of their ``repositories``,
    as written in the parents (the child may replace a repository by name).
    """

    packages: tuple[str, ...] = ()
    repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A checked recipe with its parents merged in and every default applied."""

    name: str
    version: str
    description: str
    base: Base
    packages: tuple[str, ...]
    repositories: tuple[Repository, ...]
    files: tuple[FileSpec, ...]
    services: Services
    elements: tuple[str, ...]
    scripts: tuple[Script, ...]
    disk: Disk
    boot: BootMode
    vo: str
    root_policy: RootPolicy
    model: WorkerNodeModel
    fs_access: tuple[FsAccess, ...]
    hardening: str
    expiry_days: int
    endorser: str | None
    labels: Mapping[str, str]
    #: Every file read: the recipe, the recipes it extends, then the file sources.
    sources: tuple[Path, ...]
    #: Where each ``packages`` entry is written (not part of the recipe's identity).
    package_places: tuple[PackagePlace, ...] = field(default=(), compare=False)
    #: What the recipes it extends contribute; ``None`` when it extends none.
    #: Not part of the recipe's identity either: the resolved recipe is.
    inherited: Inherited | None = field(default=None, compare=False)

    def canonical(self) -> dict[str, Any]:
        """The resolved recipe as JSON-able data: what the image is built from.

        Defaults are applied and ``extends`` is gone; ``sources`` is left out,
        since where the files were read is not part of what is built.
        """
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "base": {
                "distro": self.base.distro.value,
                "release": self.base.release,
                "version": self.base.version,
                "arch": self.base.arch.value,
            },
            "packages": list(self.packages),
            "files": [spec.canonical() for spec in self.files],
            "services": {
                "enable": list(self.services.enable),
                "disable": list(self.services.disable),
            },
            "elements": list(self.elements),
            "scripts": [
                {"name": s.name, "phase": s.phase.value, "content": s.content} for s in self.scripts
            ],
            "disk": self.disk.canonical(),
            "boot": self.boot.value,
            "vo": self.vo,
            "root_policy": self.root_policy.value,
            "model": self.model.value,
            "fs_access": [a.value for a in self.fs_access],
            "hardening": self.hardening,
            "expiry_days": self.expiry_days,
            "endorser": self.endorser,
            "labels": dict(sorted(self.labels.items())),
        }
        if self.repositories:
            # Only when there are some: a recipe without keeps its digest (and cache key).
            data["repositories"] = [r.canonical() for r in self.repositories]
        return data

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical form: equal recipes, equal digests."""
        text = json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_recipe(values: dict[str, Any], sources: list[Path]) -> Recipe:
    """The :class:`Recipe` of values the field table checked without a problem."""
    base = values["base"]
    release: Release = base["release"]
    files = []
    for entry in values["files"]:
        source: SourceFile | None = entry["source"]
        content = source.data if source is not None else entry["content"].encode("utf-8")
        files.append(
            FileSpec(entry["path"], content, entry["mode"], entry["owner"], entry["group"])
        )
        if source is not None and source.path not in sources:
            sources.append(source.path)
    repositories = []
    for entry in values["repositories"]:
        key_file: KeyFile | None = entry["key"].get("file")
        pinned = entry["key"].get("fingerprint")
        fingerprint = pinned if pinned is not None else key_file.key.fingerprint if key_file else ""
        repositories.append(
            Repository(
                name=entry["name"],
                url=entry["url"],
                suites=tuple(entry["suites"]),
                components=tuple(entry["components"]),
                fingerprint=fingerprint,
                key=key_file.key.binary if key_file is not None else None,
                arch=tuple(entry["arch"]),
            )
        )
        if key_file is not None and key_file.path not in sources:
            sources.append(key_file.path)
    return Recipe(
        name=values["name"],
        version=values["version"],
        description=values["description"],
        base=Base(base["distro"], release.codename, release.version, base["arch"]),
        packages=tuple(values["packages"]),
        repositories=tuple(repositories),
        files=tuple(files),
        services=Services(
            tuple(values["services"]["enable"]), tuple(values["services"]["disable"])
        ),
        elements=tuple(values["elements"]),
        scripts=tuple(Script(s["name"], s["phase"], s["content"]) for s in values["scripts"]),
        disk=Disk(
            values["disk"]["size"],
            tuple(values["disk"]["formats"]),
            compress=values["disk"]["compress"],
        ),
        boot=values["boot"] or BootMode.usual_for(base["arch"]),
        vo=values["vo"],
        root_policy=values["root_policy"],
        model=values["model"],
        fs_access=tuple(values["fs_access"]),
        hardening=values["hardening"],
        expiry_days=values["expiry"],
        endorser=values["endorser"],
        labels=MappingProxyType(dict(values["labels"])),
        sources=tuple(sources),
    )
