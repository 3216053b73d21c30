"""Content-addressed cache of finished builds.

The key is the sha256 of a canonical JSON document of every input that
decides the image's bytes: the resolved recipe (after ``extends``, with file
contents), the generated element's digest, the builder tool versions and the
base (distribution, release, architecture, mirror and the archive's current
``InRelease`` digests, so an archive update is an input change).

An entry is a directory ``<cache>/builds/<key>/`` holding the disk files and
``entry.json`` (their digests and the producing build's record). It is written
under a temporary name and renamed into place, so a half-written entry is
never visible. A hit re-hashes every file against ``entry.json`` before use:
the cache cannot hand out a file that changed after it was stored (files are
copied, or reflinked where the file system can, never hard-linked, and
read-only; still, root can write anything); a mismatching entry is evicted and
the build runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.digest import hash_file
from imagefactory.run import run

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
#: Cache entries and published image files are read-only (0444).
READ_ONLY = 0o444
# v2: the disk's audit.json, sbom.cdx.json and labels.json are cached with it.
ENTRY_SCHEMA = "imagefactory/cache-entry/v2"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(inputs: Mapping[str, Any]) -> str:
    """The hex digest naming the cache entry for ``inputs``."""
    return hashlib.sha256(canonical_json(inputs)).hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, streamed."""
    return "sha256:" + hash_file(path).hexdigests["sha256"]


def clone_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a read-only file of its own with ``src``'s bytes: a reflink where
    the file system can (btrfs, XFS: instant, no space), else a sparse copy.

    Never a hard link: a published disk booted read-write, or edited, would
    change the cache entry and every other output sharing its inode.
    """
    run(["cp", "--reflink=auto", "--sparse=always", "--", src, dst])
    os.chmod(dst, READ_ONLY)


@dataclass(frozen=True)
class CacheEntry:
    """A verified cache entry."""

    key: str
    path: Path
    files: Mapping[str, Mapping[str, Any]]  # name -> {"sha256", "size"}
    record: Mapping[str, Any]

    def materialize(self, dest: Path) -> dict[str, Path]:
        """Put the entry's files into ``dest``; return name -> path."""
        out = {}
        for name in self.files:
            target = dest / name
            clone_or_copy(self.path / name, target)
            out[name] = target
        return out


class BuildCache:
    """The build cache under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root / "builds"

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None (evicting a damaged one)."""
        path = self.root / key
        try:
            meta = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("schema") != ENTRY_SCHEMA or meta.get("key") != key:
            self.evict(key, "unknown entry format")
            return None
        files = meta.get("files", {})
        for name, info in files.items():
            target = path / name
            try:
                ok = target.stat().st_size == info["size"] and file_digest(target) == info["sha256"]
            except (OSError, KeyError, TypeError):
                ok = False
            if not ok:
                self.evict(key, f"{name} changed since it was stored")
                return None
        return CacheEntry(key=key, path=path, files=files, record=meta.get("record", {}))

    def store(
        self,
        key: str,
        files: Mapping[str, Path],
        digests: Mapping[str, str],
        record: Mapping[str, Any],
    ) -> None:
        """Store ``files`` (name -> path, with known digests) under ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key
        if final.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self.root))
        try:
            meta: dict[str, Any] = {"schema": ENTRY_SCHEMA, "key": key, "files": {}}
            for name, src in files.items():
                clone_or_copy(src, tmp / name)
                meta["files"][name] = {"sha256": digests[name], "size": src.stat().st_size}
            meta["record"] = record
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            tmp.rename(final)
        except OSError as exc:
            # A cache that cannot be written only costs time; the build stands.
            log.warning("could not store the build in the cache: %s", exc)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def evict(self, key: str, why: str) -> None:
        log.warning("cache entry %s discarded: %s", key[:12], why)
        path = self.root / key
        trash = self.root / f".evicted-{key}-{os.getpid()}"
        with contextlib.suppress(OSError):
            path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
