"""Where results appear, and how they appear atomically.

Every build works in a private staging directory next to its final place
(``<output>/.staging-<name>-<version>-<pid>-<random>``); on success the
staging directory is renamed to ``<output>/<name>/<version>`` in one step. A
failed or interrupted build removes its staging directory; one left by a
killed build (SIGKILL, power loss) is removed by the next build once its
process is gone. So a finished-looking directory is always a finished build.

A published version is immutable: publishing a *different* build under the
same name and version is refused unless replacing is asked for explicitly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagefactory.builder.cleanup import remove_quietly
from imagefactory.errors import BuildError
from imagefactory.model.imagedir import LOG_NAME, RECORD_NAME
from imagefactory.run import process_alive

log = logging.getLogger(__name__)

RECORD_FILE = RECORD_NAME
LOG_FILE = LOG_NAME
_STAGING_RE = re.compile(r"^\.staging-.*-(?P<pid>\d+)-[a-z0-9_]+$")


def final_dir(output_root: Path, name: str, version: str) -> Path:
    return output_root / name / version


def remove_stale_staging(output_root: Path) -> None:
    """Remove staging directories whose build process no longer exists."""
    if not output_root.is_dir():
        return
    for entry in output_root.iterdir():
        match = _STAGING_RE.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        if process_alive(int(match["pid"])):
            continue
        log.info("removing %s left by an interrupted build", entry)
        remove_quietly(entry)


@contextlib.contextmanager
def staging_dir(output_root: Path, name: str, version: str) -> Iterator[Path]:
    """A fresh staging directory, removed on the way out unless published."""
    output_root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_root)
    path = Path(
        tempfile.mkdtemp(prefix=f".staging-{name}-{version}-{os.getpid()}-", dir=output_root)
    )
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        remove_quietly(path)


def read_record(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def publish(staging: Path, final: Path, *, replace: bool = False) -> bool:
    """Move ``staging`` to ``final`` atomically; False if ``final`` already holds it.

    "Already holds it" means the same cache key (the same inputs); then the
    staging directory is dropped and the existing output left untouched.
    """
    new = read_record(staging)
    if new is None:
        raise BuildError(f"{staging}: no {RECORD_FILE}; refusing to publish an incomplete build")
    final.parent.mkdir(parents=True, exist_ok=True)
    # A published version is immutable: its files are read-only (0444), so
    # booting the disk read-write by mistake fails instead of changing it.
    for path in staging.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o444)
    if final.exists():
        old = read_record(final)
        if old is not None and old.get("cache", {}).get("key") == new["cache"]["key"]:
            return False
        if not replace:
            raise BuildError(
                f"{final} already holds a different build of this name and version",
                hint="published versions are immutable: bump `version` in the recipe, "
                "or pass --replace to overwrite it",
            )
        _require_disks(staging, new, final)
        trash = final.parent / f".replaced-{final.name}-{os.getpid()}"
        final.rename(trash)
        staging.rename(final)
        remove_quietly(trash)
        return True
    _require_disks(staging, new, final)
    staging.rename(final)
    return True


def _require_disks(staging: Path, record: dict[str, Any], final: Path) -> None:
    """Refuse a staging directory that lacks a disk its record names.

    A cached rebuild into an output that already held the build copies no
    disk into staging; should that output go away before this rename, the
    staging directory must not take its place.
    """
    files = record.get("disk", {}).get("files", {})
    missing = [name for name in files if not (staging / name).is_file()]
    if missing:
        raise BuildError(
            f"{final} changed during the build: the staging directory lacks {', '.join(missing)}",
            hint="run the build again",
        )
