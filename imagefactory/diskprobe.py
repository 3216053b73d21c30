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
  inspect without one (ext2/3/4, XFS, Btrfs, a squashfs);
* which firmware boots it (:func:`boot_mode`): a GPT with an EFI system
  partition is a UEFI disk, anything else a BIOS one -- read from the
  partition table (through ``qemu-img dd`` for a qcow2), never guessed.
"""

from __future__ import annotations

import struct
import tempfile
import uuid
from pathlib import Path

from imagefactory.errors import FileAccessError, InputError
from imagefactory.run import run
from imagefactory.vocab import BootMode

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


#: The partition type GUID of an EFI system partition.
ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
SECTOR = 512
#: The first bytes of a disk that hold its GPT header and (usually) its entries.
_GPT_HEAD = 1024 * 1024


def _disk_head(path: Path, fmt: str) -> bytes:
    """The first :data:`_GPT_HEAD` bytes of the disk as the guest sees them."""
    if fmt == "raw":
        try:
            with path.open("rb") as stream:
                return stream.read(_GPT_HEAD)
        except OSError as exc:
            raise FileAccessError.from_os_error(path, "read the disk image", exc) from exc
    with tempfile.TemporaryDirectory(prefix="imagefactory-probe-") as tmp:
        head = Path(tmp) / "head.raw"
        # The format stated (checked by the caller), never probed; only the head is read.
        run(
            [
                "qemu-img",
                "dd",
                "-f",
                fmt,
                "-O",
                "raw",
                f"bs={_GPT_HEAD}",
                "count=1",
                f"if={path}",
                f"of={head}",
            ]
        )
        return head.read_bytes()[:_GPT_HEAD]


def boot_mode(path: Path, fmt: str) -> BootMode:
    """``uefi`` for a disk whose GPT holds an EFI system partition, else ``bios``.

    ``fmt`` is the disk's checked format (:func:`imagefactory.diskformat.check_safe`).
    The labels' boot mode (read through libguestfs) also asks for the ESP's
    loader; picking the firmware needs only the partition table.
    """
    head = _disk_head(path, fmt)
    header = head[SECTOR : 2 * SECTOR]
    if header[:8] != b"EFI PART":
        return BootMode.BIOS
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    start = entries_lba * SECTOR
    if size < 128 or count > 1024:
        return BootMode.BIOS  # not a GPT this probe understands: the usual firmware
    for index in range(count):
        entry = head[start + index * size : start + index * size + 16]
        if len(entry) < 16:
            break
        if uuid.UUID(bytes_le=entry) == ESP_TYPE:
            return BootMode.UEFI
    return BootMode.BIOS
