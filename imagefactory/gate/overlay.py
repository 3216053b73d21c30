"""Copy-on-write overlays the gate accepts: those imagefactory made, in its run directory.

:func:`make_overlay` creates ``RUN_DIR/JOB/disk.qcow2`` over a store image's
disk (absolute backing path, backing format recorded) and writes
``RUN_DIR/JOB/overlay.json``: the overlay's name, its base, the base's format
and the sha256 of the overlay as made. The gate (:func:`check_overlay`)
accepts an overlay only if such a record sits next to it in a run directory
that is root's and writable by root only, names this overlay and this base,
and -- at the first start -- the overlay is still byte for byte what was made
(a pre-filled overlay would show the guest the attacker's data over the
verified base). The first start marks the record ``started``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.errors import InputError
from imagefactory.gate.dirs import untrusted_dir
from imagefactory.gate.text import shown
from imagefactory.model.imagedir import LayoutError, load_image_dir
from imagefactory.run import run

RECORD = "overlay.json"
OVERLAY = "disk.qcow2"
DEFAULT_RUN_DIR = Path("/var/lib/imagefactory/run")
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_MAX_RECORD = 64 * 1024


class OverlayError(InputError):
    """An overlay cannot be made (bad job name, base not an image, job exists)."""


@dataclass(frozen=True)
class OverlayRecord:
    """What :func:`make_overlay` wrote about one overlay."""

    overlay: str
    base: str
    base_format: str
    sha256: str
    started: bool = False


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _write_record(path: Path, record: OverlayRecord) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".overlay.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(record.__dict__, stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_overlay(base_image: Path, run_dir: Path, job: str) -> Path:
    """A fresh qcow2 overlay over ``base_image``'s disk for ``job``; returns its path."""
    if not _JOB.match(job):
        raise OverlayError(f"job name {shown(job)}: letters, digits, '_', '.', '-' only")
    try:
        image = load_image_dir(base_image)
    except LayoutError as exc:
        raise OverlayError(f"{base_image}: not an image directory: {exc.message}") from exc
    base = Path(os.path.realpath(image.disk))
    # 0755: root's and writable by root only (what the gate checks), and passable for
    # a hypervisor that runs as its own user (libvirt's qemu) to reach the overlay.
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    job_dir = run_dir / job
    try:
        job_dir.mkdir(mode=0o755)
    except FileExistsError as exc:
        raise OverlayError(f"{job_dir}: the job already has a run directory") from exc
    overlay = job_dir / OVERLAY
    fmt = image.declared_format
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt, str(overlay)])
    fd = os.open(overlay, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        sha = _sha256_fd(fd)
    finally:
        os.close(fd)
    _write_record(job_dir / RECORD, OverlayRecord(OVERLAY, str(base), fmt, sha))
    return overlay


def _read_record(path: Path) -> OverlayRecord | None:
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
    record = _read_record(record_path)
    if record is None or record.overlay != overlay.name:
        return "no record of imagefactory having made it (overlay.json)"
    if record.base != str(base) or record.base_format != base_format:
        return f"made over {shown(record.base)} ({record.base_format}), not over {base}"
    if not record.started:
        if fd is None:
            return "its first start must go through the gate's descriptor"
        if _sha256_fd(fd) != record.sha256:
            return "changed since imagefactory made it, before its first start (pre-filled)"
        _write_record(record_path, OverlayRecord(**{**record.__dict__, "started": True}))
    return None
