"""Copy-on-write overlays the gate accepts: those imagefactory made, in its run directory.

``imagefactory instantiate`` (:mod:`imagefactory.instances.make`) creates
``RUN_DIR/JOB/disk.qcow2`` over a store image's disk (absolute backing path,
backing format recorded) and writes ``RUN_DIR/JOB/overlay.json``
(:class:`OverlayRecord`): the overlay's name, its base, the base's format, the
sha256 of the overlay as made, the job, the image and when it was made. The
gate (:func:`check_overlay`) accepts an overlay only if such a record sits
next to it in a run directory that is root's and writable by root only, names
this overlay and this base, and -- at the first start -- the overlay is still
byte for byte what was made (a pre-filled overlay would show the guest the
attacker's data over the verified base). The first start marks the record
``started``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.gate.dirs import untrusted_dir
from imagefactory.gate.text import shown

RECORD = "overlay.json"
OVERLAY = "disk.qcow2"
DEFAULT_RUN_DIR = Path("/var/lib/imagefactory/run")
_MAX_RECORD = 64 * 1024


@dataclass(frozen=True)
class OverlayRecord:
    """What ``instantiate`` wrote about one overlay (``overlay.json``)."""

    overlay: str
    base: str
    base_format: str
    sha256: str
    started: bool = False
    #: The job it was made for, the base image (``vo/name/version``), when (ISO 8601,
    #: UTC) and in which boot of the host (``/proc/sys/kernel/random/boot_id``).
    job: str = ""
    image: str = ""
    created: str = ""
    boot_id: str = ""


def sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def write_record(path: Path, record: OverlayRecord) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".overlay.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(record.__dict__, stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> OverlayRecord | None:
    """The record at ``path`` (not followed if a symlink); ``None`` if it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data: Any = json.loads(os.read(fd, _MAX_RECORD + 1)[:_MAX_RECORD])
        return OverlayRecord(**data) if isinstance(data, dict) else None
    except (ValueError, RecursionError, TypeError):
        return None
    finally:
        os.close(fd)


def check_overlay(
    overlay: Path, fd: int | None, base: Path, base_format: str, run_dir: Path | None
) -> str | None:
    """Why the overlay at ``overlay`` is not one imagefactory made for ``base``; ``None`` if it is.

    ``fd``: the gate's open descriptor of the overlay (hashed at the first start).
    """
    if run_dir is None:
        return "overlays are accepted only from imagefactory's run directory (none configured)"
    run_root = Path(os.path.realpath(run_dir))
    if run_root not in overlay.parents:
        return f"not in imagefactory's run directory {run_root}"
    problem = untrusted_dir(overlay.parent, run_root)
    if problem is not None:
        return problem
    record_path = overlay.parent / RECORD
    record = read_record(record_path)
    if record is None or record.overlay != overlay.name:
        return "no record of imagefactory having made it (overlay.json)"
    if record.base != str(base) or record.base_format != base_format:
        return f"made over {shown(record.base)} ({record.base_format}), not over {base}"
    if not record.started:
        if fd is None:
            return "its first start must go through the gate's descriptor"
        if sha256_fd(fd) != record.sha256:
            return "changed since imagefactory made it, before its first start (pre-filled)"
        write_record(record_path, OverlayRecord(**{**record.__dict__, "started": True}))
    return None
