"""``instances``, ``instances gc`` and ``discard``: what lives in the run directory, and its end.

An instance is *in use* while a process holds its overlay open (a running
qemu, whoever started it: the gate, libvirt): found by looking at every
process's open files in ``/proc/*/fd`` for the overlay's device and inode.
Nothing in use is ever removed, by ``discard`` or ``gc``.

``instances gc`` removes, of what is not in use:

* a job whose instance was made before the host's last boot (the record's
  boot ID is not this boot's): no job survives a reboot of its worker node;
* a job the batch system says is gone: with ``--alive-cmd CMD``, ``CMD JOB``
  is run for every job; exit 0 means the job is alive, exit 1 that it is gone,
  anything else is reported and the instance kept (e.g.
  ``contrib/slurm/job-alive.sh``, which asks ``squeue``);
* a ``.new-`` directory (an instantiate killed before it handed out the
  overlay) or ``.trash-`` directory (a discard killed while deleting) whose
  process is gone or that was made before the last boot;
* with a store given: the images pull retired, once no instance holds them.

A job directory it does not understand (no readable record) is listed as
``unrecognised`` and left alone.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagefactory.errors import MissingToolError, UsageError
from imagefactory.gate.overlay import OVERLAY, RECORD, OverlayRecord, read_record
from imagefactory.gate.text import shown
from imagefactory.instances.rundir import (
    InstanceError,
    RunDir,
    Temp,
    boot_id,
    check_job,
)
from imagefactory.run import process_alive, run
from imagefactory.store.layout import Store, rmtree_readonly


@dataclass
class Entry:
    """One job directory, or one ``.new-``/``.trash-`` directory, of the run directory."""

    name: str
    path: Path
    #: ``instance`` (complete), ``half-made`` (.new-), ``being-removed`` (.trash-),
    #: ``unrecognised`` (a job directory without a readable record).
    kind: str
    job: str
    record: OverlayRecord | None = None
    age_seconds: float = 0.0
    #: Processes holding the overlay open.
    pids: list[int] = field(default_factory=list)
    #: Why gc would remove it; ``None``: it stays.
    gone: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "job": self.job,
            "image": record.image if record else None,
            "base": record.base if record else None,
            "overlay": str(self.path / OVERLAY) if record else None,
            "created": record.created if record else None,
            "age_seconds": round(self.age_seconds, 3),
            "started": record.started if record else False,
            "in_use_by": self.pids,
            "gone": self.gone,
        }


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def open_by(paths: Sequence[Path]) -> dict[Path, list[int]]:
    """For each file in ``paths``: the processes (other than this one) holding it open."""
    wanted = {ident: p for p in paths if (ident := _identity(p)) is not None}
    found: dict[Path, list[int]] = {p: [] for p in paths}
    if not wanted:
        return found
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd)
            except OSError:
                continue
            hit = wanted.get((st.st_dev, st.st_ino))
            if hit is not None and int(proc.name) not in found[hit]:
                found[hit].append(int(proc.name))
    return found


def _age(path: Path, now: float) -> float:
    try:
        return max(0.0, now - os.lstat(path).st_mtime)
    except OSError:
        return 0.0


def entries(run_dir: Path) -> list[Entry]:
    """Everything in the run directory, with what is in use and what gc would remove."""
    runs = RunDir(run_dir)
    now = datetime.now(UTC).timestamp()
    booted = _boot_time()
    this_boot = boot_id()
    out: list[Entry] = []
    for path in runs.jobs():
        record = read_record(path / RECORD)
        if record is None or record.overlay != OVERLAY:
            age = _age(path, now)
            out.append(Entry(path.name, path, "unrecognised", path.name, age_seconds=age))
            continue
        entry = Entry(path.name, path, "instance", path.name, record, _age(path, now))
        if record.boot_id and this_boot:
            earlier = record.boot_id != this_boot
        else:
            earlier = bool(booted) and os.lstat(path).st_mtime < booted
        if earlier:
            entry.gone = "made before the host's last boot"
        out.append(entry)
    for temp in runs.temps():
        out.append(_temp_entry(temp, now, booted))
    in_use = open_by([e.path / OVERLAY for e in out])
    for entry in out:
        entry.pids = in_use.get(entry.path / OVERLAY, [])
    return out


def _temp_entry(temp: Temp, now: float, booted: float) -> Entry:
    kind = "half-made" if temp.kind == "new" else "being-removed"
    entry = Entry(temp.path.name, temp.path, kind, temp.job, age_seconds=_age(temp.path, now))
    try:
        made = os.lstat(temp.path).st_mtime
    except OSError:
        made = now
    if booted and made < booted:
        entry.gone = "left by a process of an earlier boot"
    elif not process_alive(temp.pid):
        what = "instantiate" if temp.kind == "new" else "discard"
        entry.gone = f"left by a killed {what} (process {temp.pid} is gone)"
    return entry


@dataclass
class Removed:
    """What ``discard`` or ``gc`` did."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    retired_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "kept": self.kept,
            "retired_images_removed": self.retired_removed,
            "notes": self.notes,
        }


def _remove(runs: RunDir, path: Path, job: str) -> None:
    """One rename out of the job's name, then delete (a kill leaves only a .trash- dir)."""
    if path.name.startswith(".trash-"):
        rmtree_readonly(path)
        return
    trash = runs.temp("trash", job)
    with runs.locked():
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
    rmtree_readonly(trash)


def discard(run_dir: Path, job: str) -> Removed:
    """Remove ``job``'s instance and every record of it; an unknown job is no error."""
    check_job(job)
    runs = RunDir(run_dir)
    result = Removed()
    if not runs.directory.exists():
        result.notes.append(f"no instance of job {job}: the run directory {run_dir} is empty")
        return result
    runs.check()
    mine = [e for e in entries(run_dir) if e.job == job]
    for entry in mine:
        if entry.pids:
            raise InstanceError(
                f"job {job}: its overlay {entry.path / OVERLAY} is in use by process(es)"
                f" {', '.join(map(str, entry.pids))}",
                hint="stop the job's VM first (virsh destroy, or end its qemu), then discard",
            )
    for entry in mine:
        if entry.kind == "half-made" and entry.gone is None:
            result.kept.append({**entry.to_dict(), "why": "an instantiate is still making it"})
            continue
        _remove(runs, entry.path, job)
        result.removed.append(entry.to_dict())
    if not mine:
        result.notes.append(f"no instance of job {job} (already discarded, or never made)")
    return result


def _ask_alive(command: list[str], job: str) -> tuple[bool | None, str]:
    done = run([*command, job], capture=True, check=False, timeout=30)
    if done.returncode == 0:
        return True, ""
    if done.returncode == 1:
        return False, f"the batch system says job {job} is gone ({shlex.join(command)})"
    return None, f"{shlex.join([*command, job])}: exit {done.returncode}; kept"


def parse_alive_cmd(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--alive-cmd {shown(text)}: {exc}") from exc
    if not words:
        raise UsageError("--alive-cmd: empty command")
    return words


def gc(
    run_dir: Path,
    *,
    dry_run: bool = False,
    alive_cmd: list[str] | None = None,
    store: Path | None = None,
) -> Removed:
    """Remove what belongs to no live job (see the module's docstring)."""
    runs = RunDir(run_dir)
    result = Removed()
    if runs.directory.exists():
        runs.check()
    for entry in entries(run_dir):
        why = entry.gone
        if why is None and entry.kind == "instance" and alive_cmd is not None:
            try:
                alive, note = _ask_alive(alive_cmd, entry.job)
            except MissingToolError as exc:
                raise UsageError(f"--alive-cmd: {exc.message}") from exc
            if alive is False:
                why = note
            elif alive is None:
                result.notes.append(note)
        item = {**entry.to_dict(), "why": why}
        if why is None:
            continue
        if entry.pids:
            item["why"] = f"{why}, but in use by process(es) {', '.join(map(str, entry.pids))}"
            result.kept.append(item)
            continue
        if not dry_run:
            _remove(runs, entry.path, entry.job)
        result.removed.append(item)
    if store is not None and not dry_run:
        result.retired_removed = Store(store).remove_unheld_retired(runs)
    return result


def holders(run_dir: Path, image_dir: Path) -> list[str]:
    """The jobs whose instances have ``image_dir``'s disk as their base."""
    return RunDir(run_dir).holders(image_dir)
