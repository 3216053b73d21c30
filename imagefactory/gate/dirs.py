"""The store and every directory above an image: root's, and writable by root only.

libvirt and xl open disks by path after the gate checked them, and the gate
itself resolves a path before it opens it. Both are sound only if nobody but
root can change what a path names between check and use: every directory from
``/`` down to the image's own directory must be owned by root and not
writable by group or others. The one exception is a sticky directory owned by
root *above the store* (``/tmp``, ``/var/tmp``): there only an entry's owner may
rename or remove it, and the store's own entry is root's.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from imagefactory.gate.text import shown

#: The owner the store's directories must have (root; tests may pass their own uid).
ROOT_UID = 0


def untrusted_dir(directory: Path, store: Path, owner: int = ROOT_UID) -> str | None:
    """Why ``directory`` (resolved, inside ``store``) or a parent is unsafe; ``None`` if safe."""
    directory = Path(os.path.realpath(directory))
    store = Path(os.path.realpath(store))
    for current in (directory, *directory.parents):
        try:
            st = os.lstat(current)
        except OSError as exc:
            return f"{shown(str(current))}: cannot stat: {exc.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{shown(str(current))}: not a directory"
        in_store = current == store or store in current.parents
        if st.st_uid != owner:
            return f"{shown(str(current))}: owned by uid {st.st_uid}, not root"
        if st.st_mode & 0o022:
            if not in_store and st.st_mode & stat.S_ISVTX:
                continue  # sticky and root's: nobody else can rename the entry below
            return (
                f"{shown(str(current))}: writable by group or others"
                f" (mode {stat.S_IMODE(st.st_mode):04o})"
            )
    return None
