"""Content-addressed cache of finished builds.

The key is the sha256 of a canonical JSON document of every input that
decides the image's bytes: the resolved recipe (after ``extends``, with file
contents), the generated element's digest, the builder tool versions and the
base (distribution, release, architecture, mirror and the archive's current
``InRelease`` digests, so an archive update is an input change).

An entry is a directory ``<cache>/builds/<key>/`` holding the disk files and
``entry.json`` (their digests, the identity of each stored file, and the
producing build's record). It is written under a temporary name and renamed
into place, so a half-written entry is never visible; the stored files are
hashed once when stored and must match the digests the build computed.

A hit must not hand out a file that changed after it was stored. The files
are read-only copies, never hard links; still, root can write anything. So
each file is opened and its ``fstat`` compared with the identity recorded
when it was stored -- the one the verified cache keys on
(:func:`imagefactory.fsutil.file_identity`: inode, size, mtime, ctime, owner,
mode): any write, truncation, replacement, chmod or chown changes ctime,
which no user can set back. An unchanged identity needs no re-hash (a cached
rebuild then costs no read of the disk); a changed one is re-hashed through
the open file, and a mismatching entry is evicted and the build runs. What
was checked is what is copied: the output is made from the same descriptor.

An output never shares an inode with the cache: each hit makes the output's
files from the entry's (a reflink where the file system can, else an
in-kernel copy of the data, holes kept), read-only (0444). Booting a
published disk read-write, or editing it, can then change neither the cache
nor another output; where the file system cannot reflink, this copy is the
one cost of a hit that grows with the disk.

An entry directory's mtime is its last use: set when it is stored, renewed by
every hit. :mod:`imagefactory.builder.cacheprune` removes the least recently
used entries when the cache outgrows ``build.cache_max_size``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.digest import hash_file
from imagefactory.errors import BuildError
from imagefactory.fsutil import atomic_write, clone_or_copy_fd, file_identity

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
#: Name prefixes, under a kind's directory, of an entry being written and of one
#: being removed (never entries themselves; see cacheprune for their clean-up).
PENDING_PREFIX = ".tmp-"
EVICTED_PREFIX = ".evicted-"
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


_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class CacheEntryChanged(OSError):
    """A cache entry's file is missing, not a regular file, or changed since it was checked."""


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[int, os.stat_result]]:
    """``path`` open for reading (never through a symlink), with its ``fstat``."""
    try:
        fd = os.open(path, _OPEN_READ)
    except OSError as exc:
        raise CacheEntryChanged(f"{path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheEntryChanged(f"{path}: not a regular file")
        yield fd, st
    finally:
        os.close(fd)


def clone_or_copy(src: Path | int, dst: Path) -> os.stat_result:
    """``dst`` as a new read-only file of its own with ``src``'s bytes (a path, or an
    open descriptor to copy from as it is): a reflink where the file system can
    (btrfs, XFS: instant, no space), else an in-kernel sparse copy. Returns
    ``dst``'s ``fstat`` once it is final (read-only).

    Never a hard link: a published disk booted read-write, or edited, would
    change the cache entry and every other output sharing its inode.
    """
    if not isinstance(src, int):
        with _opened(Path(src)) as (fd, _):
            return clone_or_copy(fd, dst)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    dst_fd = os.open(dst, flags, 0o600)
    try:
        clone_or_copy_fd(src, dst_fd)
        os.fchmod(dst_fd, READ_ONLY)
        return os.fstat(dst_fd)
    finally:
        os.close(dst_fd)


@dataclass(frozen=True)
class CacheEntry:
    """A verified cache entry."""

    key: str
    path: Path
    files: Mapping[str, Mapping[str, Any]]  # name -> {"sha256", "size", "identity"}
    record: Mapping[str, Any]

    def materialize(self, dest: Path) -> dict[str, Path]:
        """Put the entry's files into ``dest``; return name -> path.

        Each file is opened, checked (its identity, else its digest) and copied
        from that one descriptor. Raises :class:`CacheEntryChanged` when a file
        changed since :meth:`BuildCache.lookup` checked it.
        """
        out = {}
        for name, info in self.files.items():
            out[name] = dest / name
            with _opened(self.path / name) as (fd, st):
                if not _unchanged(fd, st, info):
                    raise CacheEntryChanged(f"{self.path / name} changed since it was stored")
                _copy_out(fd, out[name])
        return out

    def open_checked(self, name: str) -> int:
        """The entry's file ``name`` open for reading, checked as :meth:`materialize`
        checks it before copying (its identity, else its digest): a new descriptor
        (not inherited by children) for the caller to read the entry's own inode
        through, and to close. Raises :class:`CacheEntryChanged`.
        """
        with _opened(self.path / name) as (fd, st):
            if not _unchanged(fd, st, self.files[name]):
                raise CacheEntryChanged(f"{self.path / name} changed since it was stored")
            return os.dup(fd)


def _copy_out(fd: int, target: Path) -> None:
    try:
        clone_or_copy(fd, target)
    except OSError as exc:
        raise BuildError(
            f"{target}: cannot copy it out of the build cache: {exc}",
            hint="free space where the output goes, or build with --no-cache",
        ) from exc


def _unchanged(fd: int, st: os.stat_result, info: Mapping[str, Any]) -> bool:
    """Whether the open file holds the bytes ``info`` records: by identity, else by digest."""
    if info.get("identity") == file_identity(st):
        return True
    if st.st_size != info.get("size"):
        return False
    digest = hash_file("cache entry", ("sha256",), fd=fd).hexdigests["sha256"]
    return f"sha256:{digest}" == info.get("sha256")


class PendingEntry:
    """A cache entry being written under a temporary name, a file at a time.

    The build copies its disks in while the audit still runs (:meth:`add`, in
    a thread of its own) and commits the entry once the build has passed,
    with the digests it computed (:meth:`commit`); :meth:`discard` removes
    what a failed build copied. Until :meth:`commit`'s rename, nothing of it
    is visible as an entry.
    """

    def __init__(self, cache: BuildCache, key: str) -> None:
        cache.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.final = cache.root / key
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{PENDING_PREFIX}{key[:12]}-", dir=cache.root))
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, name: str, src: Path) -> None:
        """Copy ``src`` in as ``name`` and hash the copy, through the descriptor that
        makes it read-only (the digest is checked against the build's at commit)."""
        clone_or_copy(src, self.tmp / name)
        with _opened(self.tmp / name) as (fd, st):
            got = "sha256:" + hash_file(self.tmp / name, ("sha256",), fd=fd).hexdigests["sha256"]
        self.files[name] = {"sha256": got, "size": st.st_size, "identity": file_identity(st)}

    def commit(self, digests: Mapping[str, str], record: Mapping[str, Any]) -> None:
        """Check every copy against the build's ``digests``; rename the entry into place."""
        for name, info in self.files.items():
            if info["sha256"] != digests.get(name):
                raise OSError(
                    f"{name}: its copy is {info['sha256']}, not the build's {digests.get(name)}"
                )
        if self.final.exists():
            return
        meta = {"schema": ENTRY_SCHEMA, "key": self.key, "files": self.files, "record": record}
        (self.tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self.tmp.rename(self.final)

    def discard(self) -> None:
        """Remove what was copied, unless committed."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


class BuildCache:
    """The build cache under ``root`` (``kind``: ``builds``, or ``layers`` for OS-tree layers)."""

    def __init__(self, root: Path, kind: str = "builds") -> None:
        self.root = root / kind

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None (evicting a damaged one).

        A file whose identity is the recorded one is not read at all; one whose
        identity changed (the cache restored from a backup, ...) but whose bytes
        hash to the recorded digest is kept, and its new identity recorded.
        """
        path = self.root / key
        try:
            meta = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("schema") != ENTRY_SCHEMA
            or meta.get("key") != key
        ):
            self.evict(key, "unknown entry format")
            return None
        files = meta.get("files", {})
        renewed = False
        for name, info in files.items():
            try:
                with _opened(path / name) as (fd, st):
                    ok = isinstance(info, dict) and _unchanged(fd, st, info)
            except (OSError, TypeError):
                ok = False
            if not ok:
                self.evict(key, f"{name} changed since it was stored")
                return None
            if info.get("identity") != file_identity(st):
                info["identity"] = file_identity(st)
                renewed = True
        if renewed:
            with contextlib.suppress(OSError):  # only the next hit's speed is at stake
                atomic_write(path / ENTRY_FILE, json.dumps(meta, indent=1), durable=False)
        with contextlib.suppress(OSError):  # its last use, for the size limit's pruning
            os.utime(path)
        return CacheEntry(key=key, path=path, files=files, record=meta.get("record", {}))

    def store(
        self,
        key: str,
        files: Mapping[str, Path],
        digests: Mapping[str, str],
        record: Mapping[str, Any],
    ) -> None:
        """Store ``files`` (name -> path, with the digests the build computed) under ``key``.

        Each stored copy is hashed once, through the descriptor that made it
        read-only, and must match: the entry's digests are those of the very
        files whose identity it records.
        """
        pending = self.begin(key)
        if pending is None:
            return
        try:
            for name, src in files.items():
                pending.add(name, src)
            pending.commit(digests, record)
        except OSError as exc:
            # A cache that cannot be written only costs time; the build stands.
            log.warning("could not store the build in the cache: %s", exc)
        finally:
            pending.discard()

    def begin(self, key: str) -> PendingEntry | None:
        """A pending entry for ``key``; None when it is stored already or cannot be begun
        (a cache that cannot be written only costs time: logged, the build stands)."""
        if (self.root / key).exists():
            return None
        try:
            return PendingEntry(self, key)
        except OSError as exc:
            log.warning("could not store the build in the cache: %s", exc)
            return None

    def records(self) -> dict[str, dict[str, Any]]:
        """Every entry's key and record, as stored (an unreadable entry is left out)."""
        found: dict[str, dict[str, Any]] = {}
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
                if isinstance(meta, dict) and isinstance(meta.get("record"), dict):
                    found[path.name] = meta["record"]
        return found

    def evict(self, key: str, why: str) -> None:
        log.warning("cache entry %s discarded: %s", key[:12], why)
        self.remove(key)

    def remove(self, key: str) -> None:
        """Remove the entry ``key`` (renamed out of the way first: never seen half-removed)."""
        path = self.root / key
        trash = self.root / f"{EVICTED_PREFIX}{key}-{os.getpid()}"
        with contextlib.suppress(OSError):
            path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
