"""A site for the instance tests: a catalog, one image pulled into a real store, a run dir.

``site.image``: the pulled image's directory (what ``select`` prints);
``site.instantiate(job)``: :func:`instantiate` with the site's store, policy
and run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefactory.gate.check import GateConfig, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.instances.make import Instance, instantiate
from imagefactory.instances.rundir import RunDir
from imagefactory.store.pull import PullResult
from imagefactory.trust import load_policy
from tests.catalog.world import World, make_world

KEY = "atlas/atlas-wn/1.0"


@dataclass
class Site:
    world: World

    @property
    def store(self) -> Path:
        return self.world.store

    @property
    def image(self) -> Path:
        return self.world.store / KEY

    @property
    def run_dir(self) -> Path:
        return self.world.root / "run"

    def instantiate(self, job: str, image: Path | None = None) -> Instance:
        return instantiate(
            image or self.image,
            job,
            store=self.store,
            policy=load_policy(self.world.policy_path),
            run_dir=self.run_dir,
        )

    def pull(self) -> PullResult:
        return self.world.pull(instances=RunDir(self.run_dir))

    def gate(self, disk: Path, fmt: str = "qcow2") -> tuple[bool, str]:
        config = GateConfig(load_policy(self.world.policy_path), self.store, run_dir=self.run_dir)
        result = check_disks([DiskRequest(str(disk), fmt, "vda")], config)
        return result.allowed, result.render("test")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    world = make_world(tmp_path)
    world.publish(world.image())
    assert world.pull().by_action("installed") == [KEY]
    return Site(world)
