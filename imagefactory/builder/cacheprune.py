"""Keeping the build cache within its size: the least recently used entries go first.

Finished builds (``<cache>/builds``) and OS-tree layers (``<cache>/layers``)
gain an entry of about a disk's size for every new key (a code change, an
archive update, a recipe edit), and nothing else removes them. After each
build that stored an entry, and with ``imagefactory cache prune``, the entries
used least recently are removed until the two together take at most
``build.cache_max_size``. An entry's last use is its directory's mtime: set
when it is stored, renewed by every hit (:meth:`BuildCache.lookup`). A build's
own entries are never removed by its own prune, even when they alone exceed
the limit.

Removal is the cache's own (:meth:`BuildCache.remove`): the entry is renamed
out of the way first, so a lookup sees it whole or not at all; a build copying
out of it at that moment finds a file gone, takes it as a miss and builds.

What interrupted builds left (``.tmp-*``, an entry being written; ``.evicted-*``,
one being removed) goes too once it is a day old: a build writes its pending
entry within its own run, so anything older has no owner.

The debootstrap tarballs and apt archives (``<cache>/dib``), the appliance and
the small verdict files are not entries: each is one per base or host, and
replaced in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagefactory.builder.cache import EVICTED_PREFIX, PENDING_PREFIX, BuildCache
from imagefactory.builder.layer import LAYER_KIND

#: The cache kinds the size limit covers, as the directories under the cache.
KINDS = ("builds", LAYER_KIND)
#: Age (seconds) after which an interrupted build's left-over directory is removed.
LEFTOVER_AGE = 24 * 3600
_LEFTOVER_PREFIXES = (PENDING_PREFIX, EVICTED_PREFIX)


@dataclass(frozen=True)
class CacheItem:
    """One cache entry as it is on disk."""

    kind: str
    key: str
    path: Path
    size: int  # bytes allocated (st_blocks), what removing it frees
    last_used: float  # the entry directory's mtime
    label: str  # "atlas-wn-debian12 1.0" for a build; the layer's base for a layer

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "path": str(self.path),
            "bytes": self.size,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used)),
            "label": self.label,
        }


@dataclass
class Pruned:
    """What :func:`prune` removed (or would remove, with ``dry_run``) and what is left."""

    limit: int
    removed: list[CacheItem] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    kept: list[CacheItem] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(item.size for item in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(item.size for item in self.kept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit_bytes": self.limit,
            "removed": [item.to_dict() for item in self.removed],
            "freed_bytes": self.freed,
            "leftovers": [str(p) for p in self.leftovers],
            "kept": [item.to_dict() for item in self.kept],
            "kept_bytes": self.kept_bytes,
        }


def allocated(path: Path) -> int:
    """Bytes allocated to ``path`` and everything under it (never following a symlink)."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except OSError:
            continue
        total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                stack.extend(current / name for name in os.listdir(current))
    return total


def _label(kind: str, record: dict[str, Any] | None) -> str:
    if record is None:
        return "(unreadable entry)"
    try:
        if kind == "builds":
            return f"{record['image']['name']} {record['image']['version']}"
        plan = record.get("plan") or {}
        base = plan.get("base") if isinstance(plan, dict) else None
        if isinstance(base, dict):
            return " ".join(str(base.get(k, "?")) for k in ("distro", "release", "arch"))
        return "layer"
    except (KeyError, TypeError):
        return "(unreadable entry)"


def _entries(cache_dir: Path, kind: str) -> Iterator[Path]:
    root = cache_dir / kind
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for name in sorted(os.listdir(root)):
            yield root / name


def scan(cache_dir: Path) -> list[CacheItem]:
    """Every entry of every kind, least recently used first."""
    items = []
    for kind in KINDS:
        records = BuildCache(cache_dir, kind).records()
        for path in _entries(cache_dir, kind):
            if path.name.startswith("."):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            items.append(
                CacheItem(
                    kind,
                    path.name,
                    path,
                    allocated(path),
                    st.st_mtime,
                    _label(kind, records.get(path.name)),
                )
            )
    items.sort(key=lambda item: (item.last_used, item.kind, item.key))
    return items


def leftovers(cache_dir: Path, now: float) -> list[Path]:
    """Interrupted builds' pending or half-removed entries older than :data:`LEFTOVER_AGE`."""
    found = []
    for kind in KINDS:
        for path in _entries(cache_dir, kind):
            if not path.name.startswith(_LEFTOVER_PREFIXES):
                continue
            with contextlib.suppress(OSError):
                if now - os.lstat(path).st_mtime >= LEFTOVER_AGE:
                    found.append(path)
    return found


def prune(
    cache_dir: Path,
    limit: int,
    keep: Collection[str] = (),
    *,
    now: float | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Remove the least recently used entries until all take at most ``limit`` bytes.

    ``keep`` names keys never removed (the running build's own). With
    ``dry_run`` nothing is removed; the result says what would be.
    """
    now = time.time() if now is None else now
    done = Pruned(limit=limit, leftovers=leftovers(cache_dir, now))
    items = scan(cache_dir)
    total = sum(item.size for item in items)
    for item in items:
        if total > limit and item.key not in keep:
            done.removed.append(item)
            total -= item.size
        else:
            done.kept.append(item)
    if not dry_run:
        for item in done.removed:
            BuildCache(cache_dir, item.kind).remove(item.key)
        for path in done.leftovers:
            shutil.rmtree(path, ignore_errors=True)
    return done
