"""The catalog: init, publish, delegations, revocation, refresh; one behaviour per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from imagefactory.attest.keys import load_public_key, load_signer
from imagefactory.catalog.descriptor import parse_descriptor
from imagefactory.catalog.ops import delegate, list_images, refresh, revoke
from imagefactory.catalog.repo import Catalog
from imagefactory.errors import CatalogError
from tests.catalog.world import World, make_world
from tests.fakes.imagedirs import key_sign, make_image


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_init_writes_a_loadable_empty_catalog_and_keys_outside_it(world: World) -> None:
    state = world.catalog.load()
    assert state.root.signed.consistent_snapshot
    assert list(state.all_targets()) == []
    assert not list(world.catalog.directory.rglob("*.pem"))
    keys = world.catalog.keys_dir
    assert sorted(p.name for p in keys.glob("*.pem")) == [
        "root.pem",
        "snapshot.pem",
        "targets.pem",
        "timestamp.pem",
    ]
    assert keys.stat().st_mode & 0o077 == 0


def test_init_twice_is_refused(world: World) -> None:
    with pytest.raises(CatalogError) as err:
        world.catalog.init()
    assert err.value.code == "catalog-exists"


def test_publish_makes_a_descriptor_target_with_selection_labels(world: World) -> None:
    published = world.publish(world.image())
    assert published.changed
    assert published.role == "targets"
    state = world.catalog.load()
    [(_, info)] = list(state.all_targets())
    assert info.path == "atlas/atlas-wn/1.0.json"
    assert info.custom["distro"] == "debian"
    assert info.custom["arch"] == "x86_64"
    assert info.custom["vo"] == "atlas"
    desc = parse_descriptor(world.catalog.read_target(info), info.path)
    disk = desc.disk
    assert set(disk.hashes) == {"sha256", "sha512"}
    assert disk.hashes["sha256"] == desc.labels["disk"]["sha256"]
    assert (world.catalog.directory / disk.path).stat().st_size == disk.length
    assert [f.kind for f in desc.files] == ["disk", "labels", "sbom", "audit", "attestation"]


def test_publish_same_image_again_changes_nothing(world: World) -> None:
    image = world.image()
    world.publish(image)
    version = world.catalog.load().timestamp.signed.version
    assert not world.publish(image).changed
    assert world.catalog.load().timestamp.signed.version == version


def test_publish_of_the_same_image_signed_again_changes_nothing(world: World) -> None:
    image = world.image()
    world.publish(image)
    version = world.catalog.load().timestamp.signed.version
    key_sign(image, world.vo_keys["atlas"])  # a second, different DSSE signature
    assert not world.publish(image).changed
    assert world.catalog.load().timestamp.signed.version == version


def test_publish_other_bytes_under_a_published_version_is_refused(world: World) -> None:
    world.publish(world.image())
    other = world.image(disk=b"\x01" * 65536, name="atlas-wn")
    with pytest.raises(CatalogError) as err:
        world.publish(other)
    assert err.value.code == "catalog-immutable"


def test_publish_unsigned_image_is_refused(world: World, tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as err:
        world.publish(make_image(tmp_path / "unsigned", "x"))
    assert err.value.code == "catalog-unsigned"


def test_publish_disk_changed_after_labelling_is_refused(world: World) -> None:
    image = world.image()
    disk = next(image.glob("*.raw"))
    disk.write_bytes(b"\x00" * disk.stat().st_size)
    with pytest.raises(CatalogError) as err:
        world.publish(image)
    assert err.value.code == "catalog-digest-mismatch"
    assert list(world.catalog.load().all_targets()) == []


def test_newer_version_names_what_it_supersedes(world: World) -> None:
    world.publish(world.image(version="1.9"))
    published = world.publish(world.image(version="1.10"))
    assert published.descriptor.supersedes == "1.9"


def test_delegated_vo_role_signs_its_own_images(world: World) -> None:
    key = world.vo_key("cms")
    delegate(world.catalog, "cms", [load_public_key(Path(str(key) + ".pub"))], 1)
    published = world.publish(world.image("cms-wn", vo="cms"), vo_signer="cms")
    assert published.role == "vo.cms"
    state = world.catalog.load()
    role = state.roles["vo.cms"]
    assert list(role.signed.targets) == ["cms/cms-wn/1.0.json"]
    assert [s.keyid for s in role.signatures.values()] == [load_signer(str(key)).public_key.keyid]


def test_publish_for_a_delegated_vo_without_its_key_is_refused(world: World) -> None:
    key = world.vo_key("cms")
    delegate(world.catalog, "cms", [load_public_key(Path(str(key) + ".pub"))], 1)
    with pytest.raises(CatalogError) as err:
        world.publish(world.image("cms-wn", vo="cms"), vo_signer="atlas")
    assert err.value.code == "catalog-no-key"
    assert "vo.cms" not in world.catalog.load().roles


def test_delegation_threshold_needs_that_many_vo_keys(world: World) -> None:
    k1, k2 = world.vo_key("cms"), world.vo_key("atlas")
    pubs = [load_public_key(Path(str(k) + ".pub")) for k in (k1, k2)]
    delegate(world.catalog, "cms", pubs, 2)
    with pytest.raises(CatalogError) as err:
        world.publish(world.image("cms-wn", vo="cms"), vo_signer="cms")
    assert err.value.code == "catalog-no-key"
    signers = [load_signer(str(k)) for k in (k1, k2)]
    from imagefactory.catalog.publish import publish

    assert publish(world.catalog, world.root / "src/cms/cms-wn/1.0", signers=signers).changed


def test_revoke_lists_the_image_with_its_reason_and_removes_the_target(world: World) -> None:
    world.publish(world.image())
    revoke(world.catalog, "atlas-wn", "1.0", "CVE-2026-0001 in the kernel")
    listing = list_images(world.catalog)
    assert listing["images"] == []
    [item] = listing["revoked"]
    assert (item["name"], item["version"], item["vo"]) == ("atlas-wn", "1.0", "atlas")
    assert item["reason"] == "CVE-2026-0001 in the kernel"


def test_revoked_version_cannot_be_published_again(world: World) -> None:
    image = world.image()
    world.publish(image)
    revoke(world.catalog, "atlas-wn", "1.0", "bad")
    with pytest.raises(CatalogError) as err:
        world.publish(image)
    assert err.value.code == "catalog-revoked"


def test_revoke_of_an_unknown_image_is_refused(world: World) -> None:
    with pytest.raises(CatalogError) as err:
        revoke(world.catalog, "nope", "1.0", "x")
    assert err.value.code == "catalog-not-found"


def test_refresh_resigns_timestamp_and_snapshot_with_new_expiry(world: World) -> None:
    before = world.catalog.load()
    refresh(world.catalog)
    after = world.catalog.load()
    assert after.timestamp.signed.version == before.timestamp.signed.version + 1
    assert after.snapshot.signed.version == before.snapshot.signed.version + 1
    assert after.targets.signed.version == before.targets.signed.version


def test_configured_expiries_are_used(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c")
    catalog.init({"timestamp": 0.5, "targets": 10})
    state = catalog.load()
    ts = state.timestamp.signed.expires - catalog.clock()
    assert 0.4 * 86400 < ts.total_seconds() <= 0.5 * 86400
    assert (state.targets.signed.expires - catalog.clock()).days in (9, 10)


def test_a_tampered_role_file_fails_to_load(world: World) -> None:
    world.publish(world.image())
    state = world.catalog.load()
    path = world.catalog.metadata_dir / f"{state.targets.signed.version}.targets.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError) as err:
        world.catalog.load()
    assert err.value.code == "catalog-invalid"
    assert Metadata.from_bytes(path.read_bytes()).signed.version == state.targets.signed.version


def test_the_disk_is_hashed_once_and_its_sha512_is_the_labelled_one(world: World) -> None:
    """The copy is hashed in sha256 alone; the descriptor's sha512 is labels.json's, which
    names the same bytes (labels record both digests from one pass over the disk)."""
    import hashlib

    image = world.image(disk=b"worker node disk bytes" * 4096)
    disk_bytes = next(image.glob("*.raw")).read_bytes()
    desc = world.publish(image).descriptor
    assert desc.disk.hashes == {
        "sha256": hashlib.sha256(disk_bytes).hexdigest(),
        "sha512": hashlib.sha512(disk_bytes).hexdigest(),
    }
    published = (world.catalog.directory / desc.disk.path).read_bytes()
    assert published == disk_bytes


def test_labels_without_a_well_formed_sha512_are_refused(world: World, tmp_path: Path) -> None:
    image = world.image(name="nosha")  # signed: signing checks both digests against the disk
    labels = json.loads((image / "labels.json").read_text())
    labels["disk"]["sha512"] = "not-hex"  # then edited
    (image / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(CatalogError) as err:
        world.publish(image)
    assert err.value.code == "catalog-digest-mismatch"
    assert "sha512" in err.value.message
