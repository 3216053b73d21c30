"""contrib/slurm/job-alive.sh (for instances gc --alive-cmd) against a fake squeue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "contrib" / "slurm" / "job-alive.sh"


def _squeue(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "squeue"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("echo RUNNING", 0),  # listed
        ("echo COMPLETING", 0),
        ("exit 0", 1),  # squeue lists nothing: the job left the queue
        ('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1', 1),
        ('echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1', 2),
    ],
)
def test_job_alive_maps_squeue_to_gc_answers(tmp_path: Path, body: str, code: int) -> None:
    env = _squeue(tmp_path, body)
    done = subprocess.run([str(SCRIPT), "4242"], env=env, check=False, capture_output=True)
    assert done.returncode == code


def test_job_alive_asks_for_the_job_given(tmp_path: Path) -> None:
    env = _squeue(tmp_path, f'echo "$@" > {tmp_path}/args; echo PENDING')
    subprocess.run([str(SCRIPT), "123_4"], env=env, check=True)
    assert (tmp_path / "args").read_text() == "--noheader --jobs 123_4 --format %T\n"
