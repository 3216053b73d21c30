"""Where results appear, and how they appear atomically.

Every build works in a private staging directory next to its final place
(``<output>/.staging-<name>-<version>-<pid>-<random>``); on success the
staging directory is renamed to ``<output>/<name>/<version>`` in one step. A
failed or interrupted build removes its staging directory; one left by a
killed build (SIGKILL, power loss) is removed by the next build once its
process is gone. So a finished-looking directory is always a finished build.

A published version is immutable: publishing a *different* build under the
same name and version is refused unless replacing is asked for explicitly.

"Already up to date" is decided by file identity, never by names: when a
build is published, the identity of every file in its directory
(:func:`imagefactory.fsutil.file_identity`: inode, size, mtime, ctime, owner,
mode -- what the build cache and the verified cache key on) is recorded with
its cache key under the build cache (:func:`record_output`, in
``<cache>/outputs/``, not in the output, so whoever can write the output
cannot vouch for a file changed there). A later build of the same key leaves
the output as it is only when it holds exactly those files, each with the
recorded identity (:func:`output_unchanged`): any write, truncation,
replacement, chmod or chown changes ctime, which nobody can set back. Else
the output is made again from the cache (the same build, so no version is
overwritten).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imagefactory.builder.cleanup import remove_quietly
from imagefactory.errors import BuildError
from imagefactory.fsutil import atomic_write, file_identity
from imagefactory.model.imagedir import LOG_NAME, RECORD_NAME
from imagefactory.run import process_alive

log = logging.getLogger(__name__)

RECORD_FILE = RECORD_NAME
LOG_FILE = LOG_NAME
_STAGING_RE = re.compile(r"^\.staging-.*-(?P<pid>\d+)-[a-z0-9_]+$")
OUTPUT_RECORD_SCHEMA = "imagefactory/output-identity/v1"


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


def _output_record(records: Path, final: Path) -> Path:
    """Where the identities of the output ``final`` are recorded (one file per directory)."""
    name = hashlib.sha256(os.fsencode(final.absolute())).hexdigest()[:32]
    return records / f"{name}.json"


def _identities(directory: Path) -> dict[str, list[int]] | None:
    """Name -> identity of every entry of ``directory``; None if one is not a regular file."""
    found = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    return None
                found[entry.name] = file_identity(st)
    except OSError:
        return None
    return found


def record_output(final: Path, key: str, records: Path) -> None:
    """Record, under ``records``, the identity of every file of the just published ``final``.

    Only a speed-up for the next build of ``key`` (:func:`output_unchanged`):
    a record that cannot be written costs that build one copy of its disk.
    """
    files = _identities(final)
    if files is None:
        return
    doc = {
        "schema": OUTPUT_RECORD_SCHEMA,
        "directory": str(final.absolute()),
        "key": key,
        "files": files,
    }
    try:
        records.mkdir(parents=True, exist_ok=True)
        atomic_write(_output_record(records, final), json.dumps(doc, indent=1), durable=False)
    except OSError as exc:
        log.info("could not record the identities of %s: %s", final, exc)


def output_unchanged(final: Path, key: str, records: Path) -> bool:
    """Whether ``final`` holds exactly the files :func:`record_output` recorded for ``key``.

    The same names, none more or less, each a regular file (never followed
    through a symlink) whose identity is the recorded one.
    """
    try:
        doc = json.loads(_output_record(records, final).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != OUTPUT_RECORD_SCHEMA
        or doc.get("directory") != str(final.absolute())
        or doc.get("key") != key
        or not isinstance(doc.get("files"), dict)
        or not doc["files"]
    ):
        return False
    recorded: dict[str, Any] = doc["files"]
    return _identities(final) == recorded


def publish(
    staging: Path,
    final: Path,
    *,
    replace: bool = False,
    unchanged: Callable[[Path], bool] | None = None,
) -> bool:
    """Move ``staging`` to ``final`` atomically; False if ``final`` already holds it.

    "Already holds it" means the same cache key (the same inputs) and, when
    ``unchanged`` is given, ``unchanged(final)``: then the staging directory
    is dropped and the existing output left untouched. The same build in an
    output that fails ``unchanged`` is replaced by the staging directory's
    (the same inputs, so no version is overwritten: a changed copy is repaired).
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
        same = old is not None and old.get("cache", {}).get("key") == new["cache"]["key"]
        if same and (unchanged is None or unchanged(final)):
            return False
        if same:
            log.warning("%s changed since it was published: made again from this build", final)
        elif not replace:
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
