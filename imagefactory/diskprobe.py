"""Cheap checks that a file the user names is a disk image at all, before any launch.

:func:`imagefactory.diskformat.check_safe` decides whether a file is *safe* to
hand to qemu or libguestfs; every file is a valid raw image, so a text file or
a typo'd path passes it as "raw" and then costs a 20 s libguestfs launch (or
a boot test's whole timeout) before anything says "no operating system".
This module answers the earlier, cheaper questions, reading at most a few
kilobytes:

* does the path exist at all (a typo is "no such file", exit 2, not the
  hostile-image hint);
* does a raw file carry a partition table (an MBR or a GPT's protective MBR,
  boot signature ``55 AA`` at byte 510) or a file system that libguestfs could
  inspect without one (ext2/3/4, XFS, Btrfs, a squashfs).
"""

from __future__ import annotations

from pathlib import Path

from imagefactory.errors import FileAccessError, InputError

#: Where the signatures this module looks for sit: (offset, bytes, what).
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (510, b"\x55\xaa", "partition table"),
    (1024 + 56, b"\x53\xef", "ext file system"),
    (0, b"XFSB", "XFS file system"),
    (0x10040, b"_BHRfS_M", "Btrfs file system"),
    (0, b"hsqs", "squashfs"),
)
_PROBE_BYTES = 0x10040 + 8


class NotADiskError(InputError):
    """The file is not a disk image: nothing in it a boot or an inspection could use."""


def require_file(path: Path, what: str = "the disk image") -> None:
    """Raise :class:`FileAccessError` when ``path`` does not exist or is a directory."""
    if not path.exists() and not path.is_symlink():
        raise FileAccessError(f"{path}: cannot read {what}: no such file")
    if path.is_dir():
        raise FileAccessError(f"{path}: cannot read {what}: it is a directory, not a file")


def raw_signature(path: Path) -> str | None:
    """What makes the raw file at ``path`` look like a disk, or ``None``."""
    try:
        with path.open("rb") as stream:
            head = stream.read(_PROBE_BYTES)
    except OSError as exc:
        raise FileAccessError.from_os_error(path, "read the disk image", exc) from exc
    for offset, magic, what in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return what
    return None


def require_disk(path: Path, fmt: str) -> None:
    """Refuse a raw file with no partition table and no file system, before any launch.

    qcow2 and other formats were already recognised by their header; only
    ``raw`` (which every file is) needs this.
    """
    if fmt != "raw":
        return
    if raw_signature(path) is None:
        raise NotADiskError(
            f"{path}: not a disk image: no partition table (no boot signature at byte 510)"
            " and no file system signature",
            hint="name the disk file itself (e.g. the .qcow2 or .raw in an image directory)",
        )
