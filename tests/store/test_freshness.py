"""THREATS.md "Freshness and catalog": each attack on the metadata, refused by name.

The mirror is the catalog directory itself: each test tampers with what it
serves after a site has trusted an earlier state, then pulls again. The store
keeps what it had; nothing new is installed.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from imagefactory.attest.keys import load_public_key, load_signer
from imagefactory.catalog.descriptor import Descriptor
from imagefactory.catalog.ops import delegate
from imagefactory.catalog.repo import vo_role
from imagefactory.errors import CatalogError, CatalogRefusedError
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.publish(world.image(version="1.0"))
    world.pull()
    return world


def _meta(world: World) -> Path:
    return world.catalog.metadata_dir


def _refused(world: World, code: str) -> CatalogError:
    with pytest.raises(CatalogRefusedError) as err:
        world.pull()
    assert err.value.code == code, err.value.message
    return err.value


def test_rollback_to_an_older_timestamp_is_refused(world: World) -> None:
    old = (_meta(world) / "timestamp.json").read_bytes()
    world.publish(world.image(version="1.1"))
    world.pull()
    (_meta(world) / "timestamp.json").write_bytes(old)
    _refused(world, "catalog-rollback")
    assert world.installed() == ["atlas/atlas-wn/1.1"]


def test_rollback_of_targets_inside_a_newer_snapshot_is_refused(world: World) -> None:
    world.publish(world.image(version="1.1"))
    world.pull()
    # A snapshot signed with the online key, naming the older targets version again.
    state = world.catalog.load()
    snap = state.snapshot
    snap.signed.meta["targets.json"].version -= 1
    snap.signed.meta["targets.json"].hashes = None
    snap.signed.meta["targets.json"].length = None
    with world.catalog.transaction() as tx:
        tx.state.snapshot = snap
        tx.refresh = True
    _refused(world, "catalog-rollback")


def test_freeze_an_expired_timestamp_is_refused(world: World) -> None:
    world.catalog.clock = lambda: datetime.now(UTC) - timedelta(days=2)
    with world.catalog.transaction() as tx:
        tx.refresh = True
    error = _refused(world, "catalog-expired")
    assert "freeze" in error.message
    assert world.installed() == ["atlas/atlas-wn/1.0"]


def test_replay_same_timestamp_version_with_other_bytes_is_refused(world: World) -> None:
    path = _meta(world) / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.expires = md.signed.expires - timedelta(hours=1)
    md.signatures.clear()
    md.sign(load_signer(str(world.catalog.keys_dir / "timestamp.pem")))
    path.write_bytes(md.to_bytes(JSONSerializer()))
    _refused(world, "catalog-replay")


def test_replay_of_the_same_timestamp_bytes_is_harmless(world: World) -> None:
    result = world.pull()
    assert result.by_action("kept") == ["atlas/atlas-wn/1.0"]


def test_mix_and_match_targets_from_another_snapshot_is_refused(world: World) -> None:
    state = world.catalog.load()
    old_version = state.targets.signed.version
    world.publish(world.image(version="1.1"))
    new_version = world.catalog.load().targets.signed.version
    shutil.copy(
        _meta(world) / f"{old_version}.targets.json", _meta(world) / f"{new_version}.targets.json"
    )
    _refused(world, "catalog-mix-and-match")
    assert world.installed() == ["atlas/atlas-wn/1.0"]


def test_mix_and_match_snapshot_not_named_by_the_timestamp_is_refused(world: World) -> None:
    old = world.catalog.load().snapshot.signed.version
    world.publish(world.image(version="1.1"))
    new = world.catalog.load().snapshot.signed.version
    shutil.copy(_meta(world) / f"{old}.snapshot.json", _meta(world) / f"{new}.snapshot.json")
    _refused(world, "catalog-mix-and-match")


def test_metadata_signed_by_another_key_is_refused(world: World, tmp_path: Path) -> None:
    from imagefactory.attest.keys import generate_key

    other = load_signer(str(generate_key(tmp_path / "intruder").private))
    path = _meta(world) / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(other)
    path.write_bytes(md.to_bytes(JSONSerializer()))
    _refused(world, "catalog-bad-signature")


def test_oversized_metadata_is_refused(world: World) -> None:
    path = _meta(world) / "timestamp.json"
    doc = json.loads(path.read_bytes())
    doc["padding"] = "x" * 20000
    path.write_text(json.dumps(doc))
    _refused(world, "catalog-oversized")


def test_a_vo_role_signing_another_vos_image_is_refused(world: World) -> None:
    cms = world.vo_key("cms")
    atlas = world.vo_key("atlas")
    for vo, key in (("cms", cms), ("atlas", atlas)):
        delegate(world.catalog, vo, [load_public_key(Path(str(key) + ".pub"))])
    world.publish(world.image("cms-wn", vo="cms"), vo_signer="cms")
    world.publish(world.image("atlas-other", vo="atlas"), vo_signer="atlas")
    # The CMS key lists an ATLAS image (a real, ATLAS-signed image directory) in its own role.
    evil = world.image("atlas-evil", vo="atlas")
    from imagefactory.catalog.publish import publish

    published = publish(world.catalog, evil, signers=[load_signer(str(atlas))])
    desc: Descriptor = published.descriptor
    with world.catalog.transaction({vo_role("cms"): [load_signer(str(cms))]}) as tx:
        info = tx.state.roles["vo.atlas"].signed.targets.pop(desc.target_path)
        tx.dirty.add("vo.atlas")
        tx.role_signers["vo.atlas"] = [load_signer(str(atlas))]
        tx.state.roles["vo.cms"].signed.targets[desc.target_path] = info
        tx.dirty.add("vo.cms")
    result = world.pull()
    codes = {e.image: e.code for e in result.events}
    assert codes[desc.target_path] == "catalog-unauthorised-role"
    assert "atlas/atlas-evil/1.0" not in world.installed()
    assert "cms/cms-wn/1.0" in world.installed()


def test_a_descriptor_of_another_image_under_this_name_is_refused(world: World) -> None:
    # The catalog signs, as atlas/atlas-wn/2.0.json, the descriptor of atlas-wn 1.0.
    state = world.catalog.load()
    [(_, info)] = list(state.all_targets())
    data = world.catalog.read_target(info)
    with world.catalog.transaction() as tx:
        tx.add_target("targets", "atlas/atlas-wn/2.0.json", data, dict(info.custom))
    result = world.pull()
    codes = {e.image: e.code for e in result.events}
    assert codes["atlas/atlas-wn/2.0.json"] == "descriptor-name-mismatch"
    assert world.installed() == ["atlas/atlas-wn/1.0"]
