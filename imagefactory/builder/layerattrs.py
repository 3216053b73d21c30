"""Put an OS-tree layer's extended attributes back, inside diskimage-builder's root.d.

The child's run extracts the layer with ``tar`` and no ``--xattrs`` (as
diskimage-builder extracts its debootstrap tarball), so the ACLs systemd
sets on ``/var/log/journal`` and any file capability would be lost, where a
full build keeps them. The layer records them (:func:`imagefactory.builder.layer.check_tree`:
only POSIX ACLs and file capabilities, only on regular files and
directories); the root.d hook that extracts the layer then calls
``python -m imagefactory.builder.layerattrs TARGET_ROOT ATTRS.json`` to set
them again.

Every path is opened inside the target as if it were ``/`` and through no
symlink at all (``openat2``, ``RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS``: a tar
member's path never goes through one), never as a fifo or device node, and
the attribute is set on that open descriptor.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

from imagefactory.guest.tree import IN_TREE, RESOLVE_NO_SYMLINKS, openat2

#: The attributes a layer may carry (and so this may set).
ALLOWED_ATTRS = ("system.posix_acl_access", "system.posix_acl_default", "security.capability")
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def restore(root: Path, attrs: list[list[str]]) -> int:
    """Set each ``[path, name, base64 value]`` under ``root``; how many were set."""
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, name, value in attrs:
            if name not in ALLOWED_ATTRS:
                raise ValueError(f"{path}: attribute {name} is not one a layer may carry")
            fd = openat2(rootfd, path, _FLAGS, resolve=IN_TREE | RESOLVE_NO_SYMLINKS)
            try:
                mode = os.fstat(fd).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise ValueError(f"{path}: not a regular file or directory")
                os.setxattr(fd, name, base64.b64decode(value, validate=True))
            finally:
                os.close(fd)
    finally:
        os.close(rootfd)
    return len(attrs)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m imagefactory.builder.layerattrs TARGET_ROOT ATTRS.json")
        return 2
    try:
        attrs = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        count = restore(Path(argv[0]), attrs)
    except (OSError, ValueError, TypeError) as exc:
        print(f"imagefactory: the layer's extended attributes: {exc}", file=sys.stderr)
        return 1
    print(f"imagefactory: {count} extended attribute(s) of the layer set again")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
