"""The seam between the hardening/audit logic and libguestfs.

:class:`GuestView` is what the audit and the fact readers may do (read-only);
:class:`GuestEditor` adds what the hardening may do. Both treat the guest as
hostile: every read is capped, every listing is capped, paths are guest paths
(resolved inside the appliance, never on the host).
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: Longest file the audit or the fact readers read whole (bytes).
MAX_READ = 1 << 20
#: Most entries a directory listing or a file-system walk returns.
MAX_ENTRIES = 500_000
#: Longest string taken from a guest into labels or reports.
MAX_STRING = 256


def cap_text(value: str | bytes, limit: int = MAX_STRING) -> str:
    """A guest string made safe to store and print: decoded, control chars escaped, cut."""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", errors="backslashreplace")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Entry:
    """One file-system object, from lstat (symlinks are not followed)."""

    path: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    #: The inode number and its link count: hard links share one inode, and with
    #: it one mode (setuid bits are per inode, not per name).
    ino: int
    nlink: int

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def perms(self) -> str:
        return f"{stat.S_IMODE(self.mode):04o}"


class GuestView(Protocol):
    """Read-only, capped access to a guest's mounted file systems."""

    def lstat(self, path: str) -> Entry | None:
        """The entry at ``path`` (not following a final symlink), or None."""
        ...

    def read(self, path: str, limit: int = MAX_READ) -> bytes | None:
        """At most ``limit`` bytes of a regular file (following symlinks), or None."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (capped, sorted); [] if it is not one."""
        ...

    def walk(self, top: str = "/") -> Sequence[Entry]:
        """Every entry under ``top`` (lstat, capped at :data:`MAX_ENTRIES`)."""
        ...


class GuestEditor(GuestView, Protocol):
    """What the hardening may change."""

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    def remove(self, path: str) -> None: ...

    def chmod(self, path: str, mode: int) -> None: ...

    def truncate(self, path: str) -> None: ...

    def mkdir(self, path: str, mode: int = 0o755) -> None: ...


def read_text(guest: GuestView, path: str, limit: int = MAX_READ) -> str | None:
    """A guest text file decoded leniently (hostile bytes become escapes)."""
    data = guest.read(path, limit)
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def guest_glob(guest: GuestView, pattern: str) -> list[str]:
    """Expand a guest path pattern (``fnmatch`` per component, no ``**``), capped."""
    import fnmatch

    paths = ["/"]
    for part in [p for p in pattern.split("/") if p]:
        matched: list[str] = []
        for base in paths:
            prefix = base.rstrip("/")
            if not any(ch in part for ch in "*?["):
                candidate = f"{prefix}/{part}"
                if guest.lstat(candidate) is not None:
                    matched.append(candidate)
                continue
            matched += [
                f"{prefix}/{n}" for n in guest.listdir(base) if fnmatch.fnmatchcase(n, part)
            ]
        paths = matched[:MAX_ENTRIES]
        if not paths:
            return []
    return sorted(paths)


def world_writable(e: Entry) -> bool:
    """World-writable and not a sticky directory (like /tmp)."""
    if not (e.is_file or e.is_dir) or not e.mode & stat.S_IWOTH:
        # Device nodes, sockets and fifos in the image are hidden by devtmpfs/tmpfs at boot.
        return False
    return not (e.is_dir and e.mode & stat.S_ISVTX)
