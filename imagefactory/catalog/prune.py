"""Pruning: remove what no recent catalog state refers to.

Every change writes new metadata versions (consistent snapshots) and leaves
the old ones, so a site that read ``timestamp.json`` just before a publish
can still fetch what it named. :func:`prune` keeps the newest ``keep``
snapshots and everything they refer to -- role versions, descriptors, and
the image files those descriptors name -- and removes the rest. Root
versions are never removed: a site that pinned an old root climbs the chain
``N.root.json`` -> ``N+1.root.json`` to the newest.

Removal is by rename into the catalog's ``.tmp/`` first, so no half-removed
image directory is ever served.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagefactory.catalog.descriptor import parse_descriptor
from imagefactory.catalog.repo import Catalog
from imagefactory.errors import CatalogError

DEFAULT_KEEP = 3
_VERSIONED = re.compile(r"^([0-9]+)\.(.+)\.json$")


@dataclass
class Pruned:
    """What :func:`prune` removed (or would remove, with ``dry_run``)."""

    metadata: list[str] = field(default_factory=list)
    descriptors: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata,
            "descriptors": self.descriptors,
            "images": self.images,
            "bytes": self.bytes,
        }


def prune(catalog: Catalog, keep: int = DEFAULT_KEEP, dry_run: bool = False) -> Pruned:
    """Remove metadata, descriptors and images older than the newest ``keep`` snapshots."""
    if keep < 1:
        raise CatalogError(f"--keep {keep}: keep at least the current snapshot (1)")
    with catalog.locked():
        catalog.clean_leftovers()
        state = catalog.load()
        newest = state.snapshot.signed.version
        kept_meta: set[str] = {"root.json", "timestamp.json"}
        role_files: set[str] = set()
        for version in range(max(1, newest - keep + 1), newest + 1):
            name = f"{version}.snapshot.json"
            snapshot = _read_json(catalog.metadata_dir / name)
            if snapshot is None:
                continue
            kept_meta.add(name)
            for role, meta in snapshot.get("signed", {}).get("meta", {}).items():
                if isinstance(meta, dict) and isinstance(meta.get("version"), int):
                    role_files.add(f"{meta['version']}.{role}")
        kept_meta |= role_files
        kept_targets: set[Path] = set()
        kept_images: set[Path] = set()
        for role_file in sorted(role_files):
            doc = _read_json(catalog.metadata_dir / role_file)
            targets = doc.get("signed", {}).get("targets", {}) if doc else {}
            for path, info in targets.items() if isinstance(targets, dict) else ():
                sha = info.get("hashes", {}).get("sha256") if isinstance(info, dict) else None
                if not isinstance(sha, str):
                    continue
                head, _, base = str(path).rpartition("/")
                target = catalog.targets_dir / head / f"{sha}.{base}"
                kept_targets.add(target)
                if base.endswith(".json") and head:
                    kept_images |= _image_dirs(catalog, target, str(path))
        out = Pruned()
        for entry in sorted(catalog.metadata_dir.iterdir()):
            match = _VERSIONED.match(entry.name)
            if match is None or match.group(2) == "root" or entry.name in kept_meta:
                continue
            out.metadata.append(entry.name)
            out.bytes += _remove(catalog, entry, dry_run)
        for entry in sorted(catalog.targets_dir.rglob("*.json")):
            if entry.is_file() and entry not in kept_targets:
                out.descriptors.append(str(entry.relative_to(catalog.targets_dir)))
                out.bytes += _remove(catalog, entry, dry_run)
        for version_dir in sorted(catalog.images_dir.glob("*/*/*")):
            if version_dir.is_dir() and version_dir not in kept_images:
                out.images.append(str(version_dir.relative_to(catalog.images_dir)))
                out.bytes += _remove(catalog, version_dir, dry_run)
        if not dry_run:
            catalog.clean_leftovers()
    return out


def _read_json(path: Path) -> Any:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _image_dirs(catalog: Catalog, descriptor: Path, target: str) -> set[Path]:
    """The image directories a descriptor names (nothing if it cannot be read)."""
    try:
        parsed = parse_descriptor(descriptor.read_bytes(), target)
    except (OSError, CatalogError):
        return set()
    return {(catalog.directory / f.path).parent for f in parsed.files}


def _remove(catalog: Catalog, path: Path, dry_run: bool) -> int:
    """Size of ``path``; unless ``dry_run``, moved into ``.tmp/`` (then deleted with it)."""
    size = path.stat().st_size if path.is_file() else _tree_size(path)
    if not dry_run:
        catalog.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        moved = catalog.tmp_dir / f"pruned-{len(os.listdir(catalog.tmp_dir))}-{path.name}"
        os.replace(path, moved)
        if moved.is_dir():
            shutil.rmtree(moved)
        else:
            moved.unlink()
    return size


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
