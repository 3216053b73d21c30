"""Removing a build's work tree without ever crossing into a mount.

diskimage-builder bind-mounts host directories (``/dev``, ``/proc``, ``/sys``,
its apt cache) into its chroot. It unmounts them when it stops cleanly or on
Ctrl-C, but a build killed with SIGKILL (or a power cut) leaves them mounted
inside the staging directory, and a plain recursive delete would then walk
into the host's ``/dev``. So a tree is removed only after every mount below it
is gone: unmounted deepest first, lazily if busy; if any mount survives the
tree is left in place and the error names it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from imagefactory.errors import BuildError, ImageFactoryError
from imagefactory.run import run

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
MAX_PASSES = 8


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as ``\ooo``."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_below(path: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    path = path.resolve()
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    root = str(path).rstrip("/") or "/"
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_below(path: Path) -> None:
    """Unmount everything at or below ``path``; raise if something stays.

    Deepest first, and in passes: a mount hidden under a later one (mounted
    over its parent) becomes reachable once the upper one is gone.
    """
    left = mounts_below(path)
    for _ in range(MAX_PASSES):
        if not left:
            return
        for point in left:
            log.warning("unmounting %s, left mounted in a build's work tree", point)
            if run(["umount", str(point)], check=False, capture=True).returncode != 0:
                run(["umount", "--lazy", str(point)], check=False, capture=True)
        remaining = mounts_below(path)
        if remaining == left:
            break
        left = remaining
    if left:
        raise BuildError(
            f"cannot remove {path}: still mounted: {', '.join(map(str, left))}",
            hint="unmount these by hand (umount -l), then run the build again",
        )


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively, never following a mount or symlink out of it."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_below(path)
    if _remove_flat(path):
        return
    # --one-file-system as a second guard: rm refuses to enter another file system.
    run(["rm", "-rf", "--one-file-system", "--", str(path)], capture=True)


def _remove_flat(path: Path) -> bool:
    """Remove a directory that holds no directory, without starting ``rm``; False if
    it holds one (or is no directory, or something fails: ``rm`` then does it all).

    A cached rebuild's staging directory is such a one: its removal is then
    a few unlinks instead of a process. An entry is unlinked, never opened or
    followed (a symlink goes, its target stays).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with os.scandir(fd) as entries:
            names = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    return False
                names.append(entry.name)
        for name in names:
            os.unlink(name, dir_fd=fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def remove_quietly(path: Path) -> None:
    """:func:`remove_tree` on a path that is being abandoned: failures are logged."""
    try:
        remove_tree(path)
    except ImageFactoryError as exc:
        log.warning("could not remove %s: %s", path, exc.render())
