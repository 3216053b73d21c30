"""Real processes: kill -9 inside instantiate and discard, and two jobs racing for one base.

Whatever the point of the kill, a job's name names a whole instance (that the
gate accepts) or nothing; ``instances gc`` removes what is left; a rerun works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from imagefactory.gate.overlay import OVERLAY, RECORD, read_record
from imagefactory.instances.live import entries, gc
from tests.conftest import REPO
from tests.instances.conftest import Site


def _runner(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "tests.instances.faultrunner", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _instantiate_args(site: Site, job: str) -> list[str]:
    paths = (site.store, site.world.policy_path, site.run_dir, site.image)
    return ["instantiate", *map(str, paths), job]


def _kill_at(proc: subprocess.Popen[str], point: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == f"at {point}\n", line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def _outcome(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = proc.communicate(timeout=120)
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def _whole_or_nothing(site: Site, job: str) -> None:
    job_dir = site.run_dir / job
    if job_dir.exists():
        assert sorted(p.name for p in job_dir.iterdir()) == [OVERLAY, RECORD]
        assert read_record(job_dir / RECORD) is not None
        assert site.gate(job_dir / OVERLAY)[0]


@pytest.mark.parametrize(
    "point", ["before-create", "after-create", "after-record", "before-publish"]
)
def test_kill_9_during_instantiate(site: Site, point: str) -> None:
    proc = _runner(point, *_instantiate_args(site, "12345"))
    _kill_at(proc, point)
    assert not (site.run_dir / "12345").exists()
    _whole_or_nothing(site, "12345")
    left = [e for e in entries(site.run_dir) if e.job == "12345"]
    assert [e.kind for e in left] == ["half-made"]
    assert left[0].gone is not None
    assert "killed instantiate" in left[0].gone
    # A rerun works while the leftover is still there, and gc then removes only that.
    again = _outcome(_runner("none", *_instantiate_args(site, "12345")))
    assert again["ok"], again
    removed = gc(site.run_dir).removed
    assert [e["kind"] for e in removed] == ["half-made"]
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "12345"]
    _whole_or_nothing(site, "12345")


@pytest.mark.parametrize("point", ["after-rename", "mid-delete"])
def test_kill_9_during_discard(site: Site, point: str) -> None:
    site.instantiate("12345")
    proc = _runner(point, "discard", str(site.run_dir), "12345")
    _kill_at(proc, point)
    assert not (site.run_dir / "12345").exists()  # gone from its name at once
    left = [e for e in entries(site.run_dir) if e.job == "12345"]
    assert [e.kind for e in left] == ["being-removed"]
    # The epilogue run again finishes the job; gc would have too.
    done = _outcome(_runner("none", "discard", str(site.run_dir), "12345"))
    assert done["ok"], done
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock"]
    assert gc(site.run_dir).removed == []


def test_two_jobs_instantiate_the_same_base_at_once(site: Site) -> None:
    state = (site.store / ".pull" / "state.json").read_bytes()
    start = str(time.time() + 1.5)
    procs = [_runner("--start", start, "none", *_instantiate_args(site, job)) for job in ("1", "2")]
    outcomes = [_outcome(p) for p in procs]
    assert all(o["ok"] for o in outcomes), outcomes
    overlays = {str(o["overlay"]) for o in outcomes}
    assert overlays == {str(site.run_dir / j / OVERLAY) for j in ("1", "2")}
    for job in ("1", "2"):
        _whole_or_nothing(site, job)
    assert (site.store / ".pull" / "state.json").read_bytes() == state
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "1", "2"]


def test_one_job_instantiated_twice_at_once_gets_one_instance(site: Site) -> None:
    start = str(time.time() + 1.5)
    procs = [_runner("--start", start, "none", *_instantiate_args(site, "9")) for _ in range(2)]
    outcomes = sorted((_outcome(p) for p in procs), key=lambda o: not o["ok"])
    assert [o["ok"] for o in outcomes] == [True, False]
    assert "already has an instance" in str(outcomes[1]["error"])
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "9"]
    _whole_or_nothing(site, "9")
