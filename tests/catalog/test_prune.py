"""Pruning keeps what the newest snapshots name and every root; sites still pull."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.catalog.ops import refresh, revoke
from imagefactory.catalog.prune import prune
from imagefactory.errors import CatalogError
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _files(world: World, sub: str) -> set[str]:
    base = world.catalog.directory / sub
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


def test_prune_keeps_the_newest_snapshots_and_every_root(world: World) -> None:
    for version in ("1.0", "1.1", "1.2"):
        world.publish(world.image(version=version))
    for _ in range(5):
        refresh(world.catalog)
    before = _files(world, "metadata")
    newest = world.catalog.load().snapshot.signed.version

    done = prune(world.catalog, keep=2)

    after = _files(world, "metadata")
    assert after == before - set(done.metadata)
    assert {f"{newest}.snapshot.json", f"{newest - 1}.snapshot.json"} <= after
    assert f"{newest - 2}.snapshot.json" in done.metadata
    assert "1.root.json" in after
    assert "root.json" in after
    assert "timestamp.json" in after
    # Every image is still listed, so nothing of theirs went.
    assert done.images == []
    assert done.descriptors == []
    world.pull()
    assert world.installed() == ["atlas/atlas-wn/1.2"]
    # Pruning again right away removes nothing more.
    assert prune(world.catalog, keep=2).metadata == []


def test_prune_removes_a_revoked_image_once_no_kept_snapshot_names_it(world: World) -> None:
    world.publish(world.image(version="1.0"))
    world.publish(world.image(version="1.1"))
    revoke(world.catalog, "atlas-wn", "1.0", "CVE in the kernel")
    assert prune(world.catalog, keep=1).images == ["atlas/atlas-wn/1.0"]
    assert not (world.catalog.images_dir / "atlas" / "atlas-wn" / "1.0").exists()
    assert (world.catalog.images_dir / "atlas" / "atlas-wn" / "1.1").is_dir()
    # The revocation list itself is a target of the kept state and stays.
    assert world.catalog.revoked()[0]["version"] == "1.0"
    world.pull()
    assert world.installed() == ["atlas/atlas-wn/1.1"]


def test_dry_run_says_what_would_go_and_removes_nothing(world: World) -> None:
    world.publish(world.image(version="1.0"))
    revoke(world.catalog, "atlas-wn", "1.0", "bad")
    before = _files(world, "")
    done = prune(world.catalog, keep=1, dry_run=True)
    assert done.images == ["atlas/atlas-wn/1.0"]
    assert done.metadata
    assert done.bytes > 0
    assert _files(world, "") - {".lock"} == before - {".lock"}


def test_keep_below_one_is_refused(world: World) -> None:
    with pytest.raises(CatalogError, match="at least the current snapshot"):
        prune(world.catalog, keep=0)
