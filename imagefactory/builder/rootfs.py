"""diskimage-builder's root file system image, mounted as the OS tree to finish.

The build runs DIB with ``-t raw``: no partition table, DIB's own ext4 file
system holding the finished tree (DIB copies its chroot into a loop-mounted
file system for every output type, ``tar`` included). Mounting that image
gives the build its tree without DIB's ``tar`` of it and the extraction of
that tar: two copies of the whole tree fewer.

The mount is ``nodev,nosuid,noexec``: nothing in the image can be run, or
opened as a device, through it, whatever its modes say; the build reads and
changes it only through :class:`~imagefactory.guest.tree.HostTree`, which
resolves every path inside the tree. ``mkfs.ext4 -d`` then copies it into the
disk's own file system (with the UUID, label and options chosen here, not
DIB's), and the image is unmounted and deleted. A build that dies with the
image mounted leaves the mount inside its staging directory, which
:func:`imagefactory.builder.cleanup.remove_tree` unmounts before it deletes
anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from imagefactory.errors import BuildError
from imagefactory.run import run

#: Where, in the staging directory, the image is mounted.
TREE_DIR = "tree"
#: Where, in the staging directory, DIB writes its output: a tmpfs when the
#: disk fits in memory. DIB builds in tmpfs of its own; its output is then
#: moved from memory to memory, not written to disk to be read back and
#: deleted a few seconds later.
OUTPUT_DIR = "dib-out"
#: What the mount allows: the files as data, nothing more.
MOUNT_OPTIONS = "loop,nodev,nosuid,noexec,noatime"
TAR_BLOCK = 512


def mount_image(image: Path, tree: Path, logfile: IO[str] | None = None) -> None:
    """Mount DIB's ext4 root file system image ``image`` at a fresh ``tree``."""
    if not image.is_file():
        raise BuildError(f"diskimage-builder left no root file system image {image}")
    tree.mkdir(mode=0o755)
    run(
        ["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, "--", str(image), str(tree)],
        logfile=logfile,
    )


def output_dir(
    staging: Path, size: int, *, in_memory: bool, logfile: IO[str] | None = None
) -> Path:
    """DIB's output directory in ``staging``: a private tmpfs of at most ``size``
    bytes (``in_memory``), else a plain directory. Released with :func:`release_tree`."""
    out = staging / OUTPUT_DIR
    out.mkdir(mode=0o700)
    if in_memory:
        run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700,nodev,nosuid,noexec",
             "imagefactory-dib-out", str(out)],
            logfile=logfile,
        )  # fmt: skip
    return out


def release_tree(tree: Path, logfile: IO[str] | None = None) -> None:
    """Unmount ``tree`` if it is a mount (else delete it); then remove the directory.

    A busy mount is detached lazily: the tree is never deleted file by file
    while the image is still mounted under it.
    """
    if os.path.ismount(tree):
        if run(["umount", "--", str(tree)], logfile=logfile, check=False).returncode != 0:
            run(["umount", "--lazy", "--", str(tree)], logfile=logfile)
        tree.rmdir()
    elif tree.is_dir() and not tree.is_symlink():
        run(["rm", "-rf", "--one-file-system", "--", str(tree)], logfile=logfile)


def content_bytes(tree: Path) -> int:
    """The tree's size as a tar of it would be (headers and padding): the size check's input.

    Walks the tree without following a symlink or leaving its file system.
    """
    total = 2 * TAR_BLOCK
    device = tree.lstat().st_dev
    stack = [str(tree)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                total += TAR_BLOCK
                if entry.is_file(follow_symlinks=False):
                    total += -(-st.st_size // TAR_BLOCK) * TAR_BLOCK
                elif entry.is_dir(follow_symlinks=False) and st.st_dev == device:
                    stack.append(entry.path)
    return total
