"""Key rotation: a site that pinned the old root keeps pulling; old keys stop counting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from imagefactory.attest.keys import load_signer
from imagefactory.catalog import rotate as rotate_mod
from imagefactory.catalog.ops import refresh
from imagefactory.catalog.repo import CatalogKeys
from imagefactory.catalog.rotate import rotate_key
from imagefactory.errors import CatalogError, CatalogRefusedError
from imagefactory.store.pull import PullOptions, pull
from imagefactory.trust import load_policy
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _pull_with_root(world: World, root: bytes) -> list[str]:
    result = pull(
        str(world.catalog.directory),
        root,
        load_policy(world.policy_path),
        world.store,
        PullOptions(),
    )
    # The superseded version the catalog still lists is no refusal.
    assert result.ok, result.to_dict()
    return world.installed()


@pytest.mark.parametrize("role", ["root", "targets", "snapshot", "timestamp"])
def test_a_site_that_pinned_the_old_root_follows_a_rotation(world: World, role: str) -> None:
    pinned = world.root_json
    world.publish(world.image(version="1.0"))
    assert _pull_with_root(world, pinned) == ["atlas/atlas-wn/1.0"]
    old_keyid = load_signer(str(world.catalog.keys_dir / f"{role}.pem")).public_key.keyid

    done = rotate_key(world.catalog, role)

    assert done["retired"] == [old_keyid]
    assert done["root_version"] == 2
    root = Metadata.from_bytes(world.root_json)
    assert old_keyid not in root.signed.roles[role].keyids
    assert done["keyid"] in root.signed.roles[role].keyids
    # The old key is kept, retired, out of the role's file name.
    assert (world.catalog.keys_dir / "retired").is_dir()
    assert (
        load_signer(str(world.catalog.keys_dir / f"{role}.pem")).public_key.keyid == done["keyid"]
    )
    # A later change signs with the new key only, and sites (old pin, new pin) follow.
    world.publish(world.image(version="1.1"))
    refresh(world.catalog)
    expected = ["atlas/atlas-wn/1.1"]  # the newer replaces the older
    assert _pull_with_root(world, pinned) == expected
    assert _pull_with_root(world, world.root_json) == expected
    if role != "root":
        latest = {"timestamp": "timestamp.json"}.get(role)
        if latest is not None:
            signed = json.loads((world.catalog.metadata_dir / latest).read_bytes())
            assert [s["keyid"] for s in signed["signatures"]] == [done["keyid"]]


def test_an_old_timestamp_key_can_no_longer_sign_for_the_sites(world: World) -> None:
    pinned = world.root_json
    world.publish(world.image(version="1.0"))
    old = load_signer(str(world.catalog.keys_dir / "timestamp.pem"))
    rotate_key(world.catalog, "timestamp")
    refresh(world.catalog)
    # Whoever still holds the old key re-signs the current timestamp with it alone.
    path = world.catalog.metadata_dir / "timestamp.json"
    md = Metadata.from_bytes(path.read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(old)
    os.chmod(path, 0o644)
    path.write_bytes(md.to_bytes())
    with pytest.raises(CatalogRefusedError) as err:
        pull(
            str(world.catalog.directory),
            pinned,
            load_policy(world.policy_path),
            world.store,
            PullOptions(),
        )
    assert "timestamp" in err.value.message


def test_a_rotation_killed_after_the_new_root_signs_with_the_trusted_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = world.root_json
    world.publish(world.image(version="1.0"))

    def killed(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rotate_mod, "_swap_key_files", killed)
    with pytest.raises(KeyboardInterrupt):
        rotate_key(world.catalog, "snapshot")
    monkeypatch.undo()
    # The new root is out; the key files were not renamed. Changes still work,
    # signed by the key the new root trusts (found by key id), and sites follow.
    assert (world.catalog.keys_dir / "snapshot.next.pem").exists()
    world.publish(world.image(version="1.1"))
    assert _pull_with_root(world, pinned) == ["atlas/atlas-wn/1.1"]
    # Rerunning finishes the interrupted rotation first, then rotates again.
    again = rotate_key(world.catalog, "snapshot")
    assert again["root_version"] == 3
    assert not (world.catalog.keys_dir / "snapshot.next.pem").exists()
    assert _pull_with_root(world, pinned) == ["atlas/atlas-wn/1.1"]


def test_a_root_json_behind_its_chain_is_followed(world: World) -> None:
    """Killed between writing N+1.root.json and root.json: the catalog follows the chain."""
    rotate_key(world.catalog, "targets")
    root2 = (world.catalog.metadata_dir / "2.root.json").read_bytes()
    (world.catalog.metadata_dir / "root.json").write_bytes(
        (world.catalog.metadata_dir / "1.root.json").read_bytes()
    )
    assert world.catalog.load().root.signed.version == 2
    assert world.catalog.latest_root().to_bytes() == Metadata.from_bytes(root2).to_bytes()


def test_a_chain_link_not_signed_by_the_previous_root_is_refused(world: World) -> None:
    rotate_key(world.catalog, "root")
    link = world.catalog.metadata_dir / "2.root.json"
    md = Metadata.from_bytes(link.read_bytes())
    md.signatures.clear()
    md.sign(load_signer(str(world.catalog.keys_dir / "root.pem")))  # new key only
    os.chmod(link, 0o644)
    link.write_bytes(md.to_bytes())
    (world.catalog.metadata_dir / "root.json").write_bytes(
        (world.catalog.metadata_dir / "1.root.json").read_bytes()
    )
    with pytest.raises(CatalogError, match="root metadata does not verify"):
        world.catalog.load()


def test_unknown_role_is_refused_with_the_choices(world: World) -> None:
    with pytest.raises(CatalogError, match="root, targets, snapshot, timestamp"):
        rotate_key(world.catalog, "vo.atlas")


def test_missing_trusted_key_names_the_role_and_the_keys_directory(world: World) -> None:
    (world.catalog.keys_dir / "timestamp.pem").unlink()
    with pytest.raises(CatalogError, match="timestamp keys the root") as caught:
        refresh(world.catalog)
    assert str(world.catalog.keys_dir) in str(caught.value)


def test_keys_are_chosen_by_keyid_not_by_file_name(world: World) -> None:
    keys = CatalogKeys.load(world.catalog.keys_dir)
    root = world.catalog.load().root
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert [s.public_key.keyid for s in keys.trusted(role, root)] == list(
            root.signed.roles[role].keyids
        )
