"""discard, instances and instances gc: what goes, what stays, never an overlay in use."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imagefactory.gate.overlay import OVERLAY, RECORD, read_record, write_record
from imagefactory.instances.live import discard, entries, gc, holders
from imagefactory.instances.rundir import InstanceError, RunDir
from tests.instances.conftest import Site


@contextmanager
def holding_open(path: Path) -> Iterator[int]:
    """A real process (not this one) with ``path`` open, like a running qemu."""
    with path.open("rb") as stream:
        proc = subprocess.Popen(["sleep", "60"], stdin=stream)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_discard_removes_the_instance_and_its_record(site: Site) -> None:
    site.instantiate("42")
    done = discard(site.run_dir, "42")
    assert [e["job"] for e in done.removed] == ["42"]
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock"]


def test_discard_is_idempotent_and_an_unknown_job_is_no_error(site: Site) -> None:
    site.instantiate("42")
    discard(site.run_dir, "42")
    again = discard(site.run_dir, "42")
    assert again.removed == []
    assert "no instance of job 42" in again.notes[0]
    assert discard(site.world.root / "no-run-dir", "7").notes


def test_discard_refuses_a_hostile_job_id(site: Site) -> None:
    with pytest.raises(InstanceError, match=r"'\.\.'"):
        discard(site.run_dir, "..")


def test_discard_refuses_an_overlay_in_use(site: Site) -> None:
    overlay = site.instantiate("42").overlay
    with holding_open(overlay) as pid, pytest.raises(InstanceError, match=f"in use by .*{pid}"):
        discard(site.run_dir, "42")
    assert overlay.exists()
    discard(site.run_dir, "42")
    assert not overlay.exists()


def test_instances_lists_job_base_age_and_started(site: Site) -> None:
    first = site.instantiate("1")
    site.instantiate("2")
    assert site.gate(first.overlay)[0]
    listed = {e.job: e.to_dict() for e in entries(site.run_dir)}
    assert sorted(listed) == ["1", "2"]
    assert listed["1"]["image"] == "atlas/atlas-wn/1.0"
    assert listed["1"]["started"] is True
    assert listed["2"]["started"] is False
    assert listed["2"]["kind"] == "instance"
    assert listed["2"]["gone"] is None
    assert 0 <= listed["2"]["age_seconds"] < 60
    with holding_open(first.overlay) as pid:
        assert {e.job: e.pids for e in entries(site.run_dir)} == {"1": [pid], "2": []}


def _reboot(site: Site, job: str) -> None:
    """The record says the instance was made in an earlier boot of the host."""
    path = site.run_dir / job / RECORD
    record = read_record(path)
    assert record is not None
    write_record(path, dataclasses.replace(record, boot_id="an-earlier-boot"))


def test_gc_removes_instances_of_an_earlier_boot_and_keeps_the_rest(site: Site) -> None:
    site.instantiate("old")
    site.instantiate("new")
    _reboot(site, "old")
    dry = gc(site.run_dir, dry_run=True)
    assert [(e["job"], e["why"]) for e in dry.removed] == [
        ("old", "made before the host's last boot")
    ]
    assert (site.run_dir / "old").exists()
    done = gc(site.run_dir)
    assert [e["job"] for e in done.removed] == ["old"]
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "new"]


def test_gc_never_removes_an_overlay_in_use(site: Site) -> None:
    overlay = site.instantiate("old").overlay
    _reboot(site, "old")
    with holding_open(overlay):
        done = gc(site.run_dir)
    assert done.removed == []
    assert "in use by" in done.kept[0]["why"]
    assert overlay.exists()


def test_gc_removes_leftovers_of_killed_processes_only(site: Site) -> None:
    runs = RunDir(site.run_dir)
    site.instantiate("1")
    dead = _dead_pid()
    half = site.run_dir / f".new-{dead}-0123abcd-9"
    trash = site.run_dir / f".trash-{dead}-0123abcd-8"
    busy = site.run_dir / f".new-{os.getpid()}-0123abcd-7"  # this process is alive
    for path in (half, trash, busy):
        path.mkdir()
        (path / OVERLAY).write_bytes(b"partial")
    assert {t.job: t.kind for t in runs.temps()} == {"9": "new", "8": "trash", "7": "new"}
    kinds = {e.name: (e.kind, e.gone) for e in entries(site.run_dir)}
    assert kinds[half.name][0] == "half-made"
    assert kinds[trash.name][0] == "being-removed"
    assert kinds[busy.name] == ("half-made", None)
    done = gc(site.run_dir)
    assert sorted(e["name"] for e in done.removed) == sorted([half.name, trash.name])
    assert sorted(p.name for p in site.run_dir.iterdir()) == sorted([busy.name, ".lock", "1"])


def test_gc_leaves_a_directory_it_does_not_understand(site: Site) -> None:
    site.instantiate("1")
    (site.run_dir / "stranger").mkdir()
    assert {e.name: e.kind for e in entries(site.run_dir)}["stranger"] == "unrecognised"
    gc(site.run_dir)
    assert (site.run_dir / "stranger").is_dir()


def test_gc_asks_the_batch_system_which_jobs_are_gone(site: Site, tmp_path: Path) -> None:
    for job in ("running", "finished", "unknown"):
        site.instantiate(job)
    alive = tmp_path / "job-alive"
    alive.write_text(
        '#!/bin/sh\ncase "$1" in running) exit 0;; finished) exit 1;; *) exit 3;; esac\n'
    )
    alive.chmod(0o755)
    done = gc(site.run_dir, alive_cmd=[str(alive)])
    assert [e["job"] for e in done.removed] == ["finished"]
    assert "says job finished is gone" in done.removed[0]["why"]
    assert any("exit 3; kept" in n for n in done.notes)
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "running", "unknown"]


def test_holders_names_the_jobs_using_an_image(site: Site) -> None:
    site.instantiate("a")
    site.instantiate("b")
    assert holders(site.run_dir, site.image) == ["a", "b"]
    assert holders(site.run_dir, site.world.root) == []
