"""One diskimage-builder image cache per concurrent build.

diskimage-builder keeps the debootstrap tarball and an apt archive cache in
its image cache (``DIB_IMAGE_CACHE``) and shares them between builds without
locking: two builds at once on one host (a CI runner building a recipe matrix)
collide on apt's archive lock, or read a tarball another build is writing. So
each build takes a *slot*: slot 0 is the cache directory itself, slot N a
``slot-N`` directory inside it, each held with an exclusive ``flock`` for the
whole DIB run. Sequential builds always get slot 0 and its warm caches; a
concurrent build gets the next free slot (cold the first time, warm after).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from imagefactory.errors import BuildError

MAX_SLOTS = 16


@contextlib.contextmanager
def cache_slot(root: Path, max_slots: int = MAX_SLOTS) -> Iterator[Path]:
    """An image-cache directory that no other build on this host is using now."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(max_slots):
        lock = (root / f"slot-{n}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            slot = root if n == 0 else root / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            yield slot
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        return
    raise BuildError(
        f"{max_slots} builds already use the diskimage-builder cache {root}",
        hint="wait for one to finish; concurrent builds on one host are limited",
    )
