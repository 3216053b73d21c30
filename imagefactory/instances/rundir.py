"""The run directory: one directory per job, made and removed in one rename each.

::

    RUN_DIR/                     root's, mode 0755 (the gate refuses anything else)
        .lock                    instantiate, discard and gc take it around their renames,
                                 pull around removing or retiring store images
        JOB/                     a job's instance, complete: disk.qcow2 + overlay.json
        .new-PID-RAND-JOB/       an instance being made (instantiate, process PID)
        .trash-PID-RAND-JOB/     an instance being removed (discard or gc, process PID)

:class:`RunDir` is what pull is given as the store's
:class:`~imagefactory.store.layout.Instances`: it looks at the holders of an
image and removes or retires it under the lock, and instantiate checks its
base again under the same lock before it publishes the overlay, so no overlay
appears over an image that pull is removing or has retired.

A job directory appears under its name only once its overlay and record are
complete (the ``.new-`` directory is renamed), and leaves under it in one
rename to ``.trash-`` before anything in it is deleted: whatever kills
instantiate or discard, a job's name either names a whole instance or
nothing. ``instances gc`` removes the ``.new-`` and ``.trash-`` directories
of processes that are gone.

Job IDs come from the batch system and are untrusted: ASCII letters, digits
and ``_ . + -``, starting with a letter or digit, at most 64 characters, no
``..``; Slurm's ``12345``, ``12345_7`` (array) and ``12345+1`` (het job) and
HTCondor's ``123.0`` fit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagefactory.errors import InputError
from imagefactory.gate.dirs import untrusted_dir
from imagefactory.gate.overlay import RECORD, read_record
from imagefactory.gate.text import shown

LOCK = ".lock"
NEW = ".new-"
TRASH = ".trash-"
MAX_JOB = 64
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z", re.ASCII)
_TEMP = re.compile(r"\.(new|trash)-([0-9]+)-[0-9a-f]{8}-(.+)\Z")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class InstanceError(InputError):
    """An instance cannot be made or removed (bad job ID, base refused, job exists, in use)."""


def check_job(job: str) -> str:
    """``job`` if it is a job ID this host accepts; raises :class:`InstanceError`."""
    hint = "a job ID is ASCII letters, digits and _ . + -, starting with a letter or digit"
    if not job:
        raise InstanceError("job ID: empty", hint=hint)
    if len(job) > MAX_JOB:
        raise InstanceError(f"job ID {shown(job)}: longer than {MAX_JOB} characters", hint=hint)
    if ".." in job:
        raise InstanceError(f"job ID {shown(job)}: contains '..'", hint=hint)
    if not _JOB.match(job):
        bad = next((c for c in job if not re.match(r"[A-Za-z0-9_.+-]", c, re.ASCII)), None)
        if bad is None:
            raise InstanceError(
                f"job ID {shown(job)}: must start with an ASCII letter or digit", hint=hint
            )
        raise InstanceError(
            f"job ID {shown(job)}: character {shown(bad)} (U+{ord(bad):04X}) is not allowed",
            hint=hint,
        )
    return job


def boot_id() -> str:
    """This boot of the host (changes at every reboot); empty where the kernel has none."""
    try:
        return BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Temp:
    """A ``.new-`` or ``.trash-`` directory: whose it is and for which job."""

    path: Path
    kind: str  # "new" or "trash"
    pid: int
    job: str


class RunDir:
    """imagefactory's run directory (see the module's docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def create(self) -> None:
        """Make it (root's, 0755) if missing and refuse it unless only root can change it."""
        try:
            # 0755: writable by root only (what the gate checks), and passable for a
            # hypervisor that runs as its own user (libvirt's qemu) to reach the overlay.
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise InstanceError(
                f"{self.directory}: cannot create the run directory: {exc.strerror}"
            ) from exc
        self.check()

    def check(self) -> None:
        problem = untrusted_dir(self.directory, self.directory)
        if problem is not None:
            raise InstanceError(
                f"run directory {self.directory}: {problem}",
                hint="the run directory and every directory above it must be root's and"
                " writable by root only (the gate refuses overlays elsewhere)",
            )

    def job_dir(self, job: str) -> Path:
        return self.directory / check_job(job)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The run directory's lock (made with the directory if it is missing: pull takes
        it before any instance exists, and an instantiate may make the first meanwhile)."""
        if not self.directory.exists():
            self.create()
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def temp(self, kind: str, job: str) -> Path:
        """A fresh name for a ``.new-`` or ``.trash-`` directory of this process."""
        prefix = NEW if kind == "new" else TRASH
        return self.directory / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}-{job}"

    def holders(self, image_dir: Path) -> list[str]:
        """The jobs whose instances have ``image_dir``'s disk as their base."""
        target = os.path.realpath(image_dir)
        jobs: list[str] = []
        for path in self.jobs():
            record = read_record(path / RECORD)
            if record is not None and os.path.dirname(record.base) == target:
                jobs.append(path.name)
        return jobs

    def jobs(self) -> list[Path]:
        """Every complete job directory, by name."""
        return [p for p in self._entries() if _JOB.match(p.name) and p.is_dir()]

    def temps(self) -> list[Temp]:
        out = []
        for path in self._entries():
            match = _TEMP.match(path.name)
            if match:
                out.append(Temp(path, match.group(1), int(match.group(2)), match.group(3)))
        return out

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.directory.iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise InstanceError(
                f"{self.directory}: cannot read the run directory: {exc.strerror}"
            ) from exc
