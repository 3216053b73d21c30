"""The batch integrations in contrib/, run as Slurm and HTCondor run them, against a real
libvirtd with the gate hook installed (tests/libvirtd.py) and a store a real pull made.

Each ends with the domain gone and nothing left: no instance in the run
directory, no temporary file, no domain.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefactory.instances.live import entries
from tests.catalog.world import World, make_world
from tests.conftest import REPO
from tests.libvirtd import Libvirt, libvirtd, require_libvirtd

pytestmark = pytest.mark.integration

CONTRIB = REPO / "contrib"
KEY = "atlas/atlas-wn/1.0"


@dataclass
class Batch:
    world: World
    libvirt: Libvirt
    tmp: Path

    @property
    def run_dir(self) -> Path:
        return self.world.root / "run"

    def env(self, **extra: str) -> dict[str, str]:
        """What the batch system's environment holds, plus the site's settings."""
        settings = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": str(REPO),
            "TMPDIR": str(self.tmp),
            "IMAGEFACTORY_CONF": str(self.world.root / "no-batch.conf"),
            "IMAGEFACTORY": f"{sys.executable} -m imagefactory",
            "IF_STORE": str(self.world.store),
            "IF_POLICY": str(self.world.policy_path),
            "IF_CACHE": str(self.world.root / "cache"),
            "IF_RUN_DIR": str(self.run_dir),
            "IF_REQUIRE": "distro=debian,release>=12,arch=x86_64,vo=atlas,root_policy=none",
            "IF_DOMAIN_TYPE": "qemu",
            "IF_MEMORY_MIB": "64",
            "VIRSH": " ".join(self.libvirt.virsh_argv),
        }
        return {**settings, **extra}

    def run(self, script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(CONTRIB / script), *args]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    def domains(self) -> list[str]:
        return self.libvirt.virsh("list", "--all", "--name").stdout.split()

    def assert_nothing_left(self) -> None:
        assert self.domains() == []
        assert entries(self.run_dir) == []
        assert list(self.tmp.iterdir()) == []
        # libvirt did not take the store's base for its qemu user (relabel='no').
        for path in (self.world.store / KEY).iterdir():
            st = path.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o444), path


@pytest.fixture(scope="module")
def batch() -> Iterator[Batch]:
    require_libvirtd()
    # Reachable by libvirt-qemu (qemu opens the overlay and its base as that user).
    work = Path(tempfile.mkdtemp(prefix="imagefactory-batch-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        world = make_world(work)
        world.publish(world.image())
        assert world.pull().by_action("installed") == [KEY]
        tmp = work / "tmp"
        tmp.mkdir()
        with libvirtd(work, world.store, world.policy_path, work / "run") as lv:
            yield Batch(world, lv, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_slurm_prolog_starts_the_jobs_node_and_the_epilog_discards_it(batch: Batch) -> None:
    env = batch.env(SLURM_JOB_ID="4242_3", SLURM_JOB_USER="alice", SLURM_JOB_UID="1000")
    done = batch.run("slurm/prolog.sh", env)
    assert done.returncode == 0, done.stderr
    assert "domain wn-4242_3 started" in done.stderr
    assert batch.domains() == ["wn-4242_3"]
    (live,) = entries(batch.run_dir)
    assert (live.job, live.record and live.record.image, live.record and live.record.started) == (
        "4242_3",
        KEY,
        True,
    )
    assert live.pids, "libvirt's qemu holds the overlay open"
    assert (live.path / "disk.qcow2").stat().st_uid == pwd.getpwnam("libvirt-qemu").pw_uid
    # While the VM runs, a discard refuses (the epilogue stops the domain first).
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagefactory",
            "discard",
            "--job",
            "4242_3",
            "--run-dir",
            str(batch.run_dir),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert "in use by" in refused.stderr
    done = batch.run("slurm/epilog.sh", env)
    assert done.returncode == 0, done.stderr
    batch.assert_nothing_left()
    again = batch.run("slurm/epilog.sh", env)  # an epilog run twice, or after a failed prolog
    assert again.returncode == 0, again.stderr
    assert "no instance of job 4242_3" in again.stderr


def test_slurm_prolog_refuses_a_hostile_job_id(batch: Batch) -> None:
    done = batch.run("slurm/prolog.sh", batch.env(SLURM_JOB_ID="../../etc"))
    assert done.returncode != 0
    assert "job ID '../../etc': contains '..'" in done.stderr
    batch.assert_nothing_left()


def test_htcondor_wrapper_runs_the_job_beside_its_node_and_cleans_up(batch: Batch) -> None:
    scratch = batch.world.root / "scratch"
    scratch.mkdir()
    ad = scratch / ".job.ad"
    ad.write_text('ClusterId = 123\nProcId = 0\nOwner = "alice"\n')
    env = batch.env(_CONDOR_SCRATCH_DIR=str(scratch), _CONDOR_JOB_AD=str(ad))
    payload = 'pwd; exec $VIRSH domstate "$IMAGEFACTORY_DOMAIN"'
    done = batch.run("htcondor/job-wrapper.sh", env, "sh", "-c", payload)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(scratch), "running"]
    batch.assert_nothing_left()
    failed = batch.run("htcondor/job-wrapper.sh", env, "sh", "-c", "exit 3")
    assert failed.returncode == 3, failed.stderr
    batch.assert_nothing_left()
