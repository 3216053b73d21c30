"""Map a disk the hypervisor would open to the image directory that vouches for it.

A disk is either an image's own disk -- it sits in an image directory of the
store next to ``labels.json``, which names it -- or a qcow2 copy-on-write
overlay whose backing file is such a disk. The overlay's backing reference is
read only with :func:`imagefactory.diskformat.detect` (pure header parsing);
it must name its backing format and resolve, symbolic links followed, inside
the configured image store. Anything else is refused: network and block
sources, disks outside the store, formats the hypervisor would open
differently from the signed one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagefactory.diskformat import DiskInfo, UnsafeImageError, detect
from imagefactory.gate.text import shown
from imagefactory.model.imagedir import LABELS_NAME, LayoutError, parse_json_object, read_small
from imagefactory.verify.verdict import Reason

STEP = "gate"


@dataclass(frozen=True)
class DiskRequest:
    """One disk of a start request: where it is and the format it would be opened as."""

    path: str
    #: The format the hypervisor is told (``driver type`` / ``format=``); ``None``: would probe.
    format: str | None
    #: Where the request names it (``vda``, ``-drive #2``), for messages.
    where: str


@dataclass(frozen=True)
class Mapped:
    """A disk mapped to its image directory; ``overlay`` is set for a copy-on-write overlay."""

    request: DiskRequest
    image_dir: Path
    overlay: Path | None = None
    #: For an overlay: its base disk (resolved) and the base's signed format.
    base: Path | None = None
    base_format: str = ""


class Refused(Exception):
    """A disk cannot be mapped to a verified image; ``reason`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(code, STEP, message)


def inside(path: Path, store: Path) -> bool:
    return path == store or store in path.parents


def labels_disk(directory: Path) -> tuple[str, str] | None:
    """(disk.file, disk.format) from ``directory/labels.json``, if it reads as such."""
    labels = directory / LABELS_NAME
    try:
        disk = parse_json_object(read_small(labels, LABELS_NAME), labels, LABELS_NAME)["disk"]
        return str(disk["file"]), str(disk["format"])
    except (OSError, LayoutError, KeyError, TypeError):
        return None


def map_disk(request: DiskRequest, store: Path) -> Mapped:
    """The image directory vouching for ``request``'s disk; raises :class:`Refused`."""
    store = Path(os.path.realpath(store))
    name = f"{request.where} ({request.path})"
    if request.format is None:
        raise Refused(
            "gate-format-mismatch",
            f"{name}: no format given; the hypervisor would probe it (name the format)",
        )
    real = Path(os.path.realpath(request.path))
    own = labels_disk(real.parent)
    if own is not None and own[0] == real.name:
        if not inside(real, store):
            raise Refused(
                "gate-outside-store", f"{name}: {real} is outside the image store {store}"
            )
        if request.format != own[1]:
            raise Refused(
                "gate-format-mismatch",
                f"{name}: opened as {request.format}, but signed as {own[1]}",
            )
        return Mapped(request, real.parent)
    return _map_overlay(request, real, store, name)


def _map_overlay(request: DiskRequest, real: Path, store: Path, name: str) -> Mapped:
    try:
        info = detect(real)
    except UnsafeImageError as exc:
        raise Refused("gate-unverifiable-disk", f"{name}: {'; '.join(exc.reasons)}") from exc
    if info.backing_file is None:
        raise Refused(
            "gate-unverifiable-disk",
            f"{name}: neither an image of the store (no labels.json names it) nor an overlay"
            " over one",
        )
    if info.format != "qcow2" or request.format != "qcow2":
        raise Refused(
            "gate-overlay",
            f"{name}: an overlay must be qcow2 opened as qcow2 (is {info.format},"
            f" opened as {request.format})",
        )
    backing = absolute_backing(name, info)
    base = Path(os.path.realpath(backing))
    if not inside(base, store):
        raise Refused(
            "gate-outside-store",
            f"{name}: the overlay's backing file {backing!r} resolves to {base}, outside the"
            f" image store {store}",
        )
    base_format = signed_base_format(name, base, info)
    return Mapped(request, base.parent, overlay=real, base=base, base_format=base_format)


def absolute_backing(name: str, info: DiskInfo) -> str:
    """The overlay's backing path, refused unless it is absolute and the header is otherwise clean.

    A relative name resolves against the overlay's directory for qemu, which a
    symlinked overlay makes another directory than the one the gate looks in:
    only an absolute path means one thing to both.
    """
    other = [p for p in info.problems if p.code != "qcow2-backing-file"]
    if other:
        raise Refused("gate-overlay", f"{name}: " + "; ".join(p.message for p in other))
    backing = info.backing_file or ""
    if not backing.startswith("/") or ":" in backing:
        raise Refused(
            "gate-overlay", f"{name}: backing file {shown(backing)} is not an absolute plain path"
        )
    return backing


def signed_base_format(name: str, base: Path, info: DiskInfo) -> str:
    """The format ``base`` is signed in, which the overlay ``info`` must open it as.

    Raises :class:`Refused` when ``base`` is not the disk of an image directory
    or the overlay would open it in another (or a probed) format.
    """
    own = labels_disk(base.parent)
    if own is None or own[0] != base.name:
        raise Refused(
            "gate-unverifiable-disk",
            f"{name}: the overlay's base {shown(str(base))} is not the disk of an image directory",
        )
    backing_format = info.details.get("backing_format")
    if backing_format != own[1]:
        raise Refused(
            "gate-format-mismatch",
            f"{name}: the overlay opens its base as {backing_format or 'probed'},"
            f" but it is signed as {own[1]}",
        )
    return own[1]
