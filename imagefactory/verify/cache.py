"""The verified cache: a second verify of an unchanged, verified image skips the hashing.

An entry is a *positive* result only, keyed on everything that could change
the answer:

* for every file verify reads (disk, labels.json, SBOM, each attestation):
  its path and ``(dev, inode, size, mtime_ns, ctime_ns, uid, gid, mode)`` from
  ``lstat`` -- writing, truncating, replacing, renaming over, chmod or chown
  all change at least ``ctime``, which no user can set back;
* the set of attestation files;
* the policy's digest, which covers the policy file and every key and trust
  root file it names.

The key is computed before the full verify and again after it; the entry is
stored only if both agree (the image did not change while it was read). An
entry also carries ``valid_until`` (expiry, maximum age): after it, a full
verify runs again. The cache file lives in a directory of its own, mode 0700,
and is written atomically with mode 0600; a cache file or directory owned by
another user, or writable by group or others, is ignored (never trusted) and
replaced by the next store. Denials are never stored, so the cache cannot turn
a refused image into an allowed one, only spare re-hashing an allowed one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from imagefactory.fsutil import atomic_write, file_identity
from imagefactory.model.imagedir import LABELS_NAME, SBOM_NAME, LayoutError, load_image_dir
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.labels import now_utc
from imagefactory.verify.pipeline import VerifyOptions, verify_image
from imagefactory.verify.verdict import Verdict

log = logging.getLogger(__name__)

CACHE_FILE = "verified.json"
#: Entries kept; the oldest go first.
MAX_ENTRIES = 4096
_FORMAT = "imagefactory-verified-cache-v1"


def image_key(path: Path, policy: TrustPolicy, disk_fd: int | None = None) -> str | None:
    """The cache key of the image directory at ``path`` under ``policy``; ``None`` if unusable.

    With ``disk_fd``, the disk's part of the key comes from that open
    descriptor: the entry found is for the very file the caller holds.
    """
    try:
        image = load_image_dir(path)
        files = [image.disk, image.path / LABELS_NAME, image.path / SBOM_NAME]
        files += image.attestations()
        stats = []
        for file in files:
            st = os.fstat(disk_fd) if disk_fd is not None and file == image.disk else os.lstat(file)
            if not stat.S_ISREG(st.st_mode):
                return None
            stats.append([file.name, *file_identity(st)])
    except (OSError, LayoutError):
        return None
    material = {
        "image": str(Path(path).resolve()),
        "files": stats,
        "policy": policy.digest,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class VerifiedCache:
    """Positive verdicts of unchanged images, in ``directory/verified.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.file = self.directory / CACHE_FILE

    def _trusted(self, path: Path, is_dir: bool) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:  # e.g. inside another user's private directory: not ours
            log.warning("ignoring verified cache %s: %s", path, exc.strerror)
            return False
        kind_ok = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)
        if kind_ok and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return True
        log.warning("ignoring verified cache %s: not a private file of this user", path)
        return False

    def load(self) -> dict[str, Any]:
        if not (self._trusted(self.directory, True) and self._trusted(self.file, False)):
            return {}
        try:
            with self.file.open("rb") as stream:
                data = json.loads(stream.read(64 * 1024 * 1024))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def lookup(self, key: str, now: datetime) -> dict[str, Any] | None:
        return self.lookup_in(self.load(), key, now)

    @staticmethod
    def lookup_in(entries: dict[str, Any], key: str, now: datetime) -> dict[str, Any] | None:
        """The entry for ``key`` among ``entries`` (from :meth:`load`) if still valid at ``now``.

        For a reader that checks many images: one :meth:`load`, then a lookup each.
        """
        entry = entries.get(key)
        if not isinstance(entry, dict):
            return None
        until = entry.get("valid_until")
        if until is not None and datetime.fromisoformat(until) <= now:
            return None
        return entry

    def store(self, key: str, verdict: Verdict, now: datetime) -> None:
        if not verdict.allowed:
            raise ValueError("the verified cache holds positive verdicts only")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._trusted(self.directory, True):
            return
        entries = self.load()
        entries[key] = {
            "image": str(verdict.image),
            "signers": verdict.signers,
            "valid_until": verdict.valid_until.isoformat() if verdict.valid_until else None,
            "verified_at": now.isoformat(),
        }
        if len(entries) > MAX_ENTRIES:
            oldest = sorted(entries, key=lambda k: entries[k].get("verified_at", ""))
            for stale in oldest[: len(entries) - MAX_ENTRIES]:
                del entries[stale]
        document = json.dumps({"format": _FORMAT, "entries": entries})
        # Private: the cache says which images this host trusts.
        atomic_write(self.file, document, 0o600, durable=False)


def verify_cached(
    path: Path, policy: TrustPolicy, cache: VerifiedCache, options: VerifyOptions | None = None
) -> Verdict:
    """:func:`verify_image`, answered from ``cache`` when the image is unchanged since it passed."""
    options = options or VerifyOptions()
    now = options.now or now_utc()
    before = image_key(path, policy, options.disk_fd)
    if before is not None:
        entry = cache.lookup(before, now)
        if entry is not None:
            until = entry.get("valid_until")
            return Verdict(
                Path(path),
                steps=["cache"],
                signers=list(entry.get("signers", [])),
                cached=True,
                valid_until=datetime.fromisoformat(until) if until else None,
            )
    verdict = verify_image(path, policy, options)
    if (
        verdict.allowed
        and before is not None
        and image_key(path, policy, options.disk_fd) == before
    ):
        try:
            cache.store(before, verdict, now)
        except OSError as exc:
            # A full or read-only cache file system costs the next verify its speed-up,
            # never this verdict.
            log.warning("verified cache %s: cannot store: %s", cache.directory, exc)
    return verdict
