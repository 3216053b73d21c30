"""pull into the store: what ends up there, what leaves, what the gate then allows."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagefactory.catalog.ops import revoke
from imagefactory.errors import UsageError
from imagefactory.gate.check import GateConfig, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.store.export import image_list, store_list
from imagefactory.store.layout import Store
from imagefactory.store.pull import parse_select
from imagefactory.trust import load_policy
from tests.catalog.world import World, make_world

KEY = "atlas/atlas-wn/1.0"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_pull_installs_the_verified_image_read_only(world: World) -> None:
    world.publish(world.image())
    result = world.pull()
    assert result.by_action("installed") == [KEY]
    assert result.ok
    image = world.store / KEY
    for path in [image, *image.iterdir()]:
        st = path.stat()
        assert st.st_mode & 0o222 == 0, path
        assert st.st_uid == os.geteuid()
    assert not list((world.store / ".pull" / "partial").iterdir())


def test_the_gate_allows_a_pulled_disk_from_the_store(world: World) -> None:
    world.publish(world.image())
    world.pull()
    disk = next((world.store / KEY).glob("*.raw"))
    config = GateConfig(load_policy(world.policy_path), world.store)
    result = check_disks([DiskRequest(str(disk), "raw", "vda")], config)
    assert result.allowed, result.render("test")


def test_pull_of_an_unchanged_catalog_transfers_no_image_bytes(world: World) -> None:
    world.publish(world.image())
    first = world.pull()
    assert first.image_bytes > 65536
    again = world.pull()
    assert again.image_bytes == 0
    assert again.by_action("kept") == [KEY]


def test_select_keeps_only_matching_images(world: World) -> None:
    world.publish(world.image())
    world.publish(world.image("cms-wn", vo="cms"))
    result = world.pull(select=parse_select("vo=cms,arch=x86_64"))
    assert world.installed() == ["cms/cms-wn/1.0"]
    assert result.ok


def test_select_with_an_unknown_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown key 'distribution'"):
        parse_select("distribution=debian")


def test_a_vo_the_policy_does_not_know_is_not_downloaded(world: World) -> None:
    world.publish(world.image())
    image = world.image("lhcb-wn", vo="lhcb")
    world.vo_keys.pop("lhcb")
    from tests.fakes.imagedirs import key_signer, vo_rules, write_policy

    write_policy(world.policy_path, {"atlas": vo_rules(key_signer("a", world.vo_keys["atlas"]))})
    world.publish(image)
    result = world.pull()
    assert world.installed() == [KEY]
    assert [e for e in result.events if e.image.startswith("lhcb")] == []
    fetched = [p.name for p in (world.store / ".pull" / "descriptors").iterdir()]
    assert not [n for n in fetched if n.startswith("lhcb")], fetched


def test_an_image_the_policy_denies_never_enters_the_store(world: World) -> None:
    # Signed by the CMS key, published for ATLAS: the site trusts only ATLAS's key for ATLAS.
    world.publish(world.image(signer_vo="cms"))
    result = world.pull()
    assert world.installed() == []
    [event] = [e for e in result.events if e.image == KEY]
    assert event.code == "verify-denied"
    assert not [p for p in (world.store / ".pull").iterdir() if p.name.startswith("staging-")]


def test_a_newer_version_replaces_the_old_and_raises_the_minimum(world: World) -> None:
    world.publish(world.image(version="1.0"))
    world.pull()
    world.publish(world.image(version="1.1"))
    result = world.pull()
    assert world.installed() == ["atlas/atlas-wn/1.1"]
    assert [(e.image, e.code) for e in result.events if e.action == "removed"] == [
        (KEY, "superseded")
    ]
    assert Store(world.store).load_state().minimum == {"atlas/atlas-wn": "1.1"}


def test_old_versions_a_catalog_still_lists_are_not_refusals(world: World) -> None:
    """A pull on a timer: the catalog keeps 1.0 beside 1.1; that is no failure."""
    world.publish(world.image(version="1.0"))
    world.pull()
    world.publish(world.image(version="1.1"))
    for _ in range(2):
        result = world.pull()
        assert result.ok, result.to_dict()
        assert not [e for e in result.events if e.action == "refused"]
    assert world.installed() == ["atlas/atlas-wn/1.1"]


def test_an_older_version_offered_after_a_newer_one_is_refused(world: World) -> None:
    world.publish(world.image(version="1.1"))
    world.pull()
    revoke(world.catalog, "atlas-wn", "1.1", "broken")
    world.publish(world.image(version="1.0"))
    result = world.pull()
    assert world.installed() == []
    codes = {e.image: e.code for e in result.events}
    assert codes[KEY] == "below-minimum-version"
    assert codes["atlas/atlas-wn/1.1"] == "revoked"


def test_a_revoked_image_leaves_the_store_on_the_next_pull(world: World) -> None:
    world.publish(world.image())
    world.pull()
    revoke(world.catalog, "atlas-wn", "1.0", "compromised key")
    result = world.pull()
    assert world.installed() == []
    removed = [e for e in result.events if e.action == "removed"]
    assert [(e.image, e.code) for e in removed] == [(KEY, "revoked")]
    assert "compromised key" in removed[0].message


def test_the_gate_refuses_a_revoked_image_after_the_next_pull(world: World) -> None:
    world.publish(world.image())
    world.pull()
    disk = next((world.store / KEY).glob("*.raw"))
    config = GateConfig(load_policy(world.policy_path), world.store)
    assert check_disks([DiskRequest(str(disk), "raw", "vda")], config).allowed
    revoke(world.catalog, "atlas-wn", "1.0", "compromised")
    world.pull()
    result = check_disks([DiskRequest(str(disk), "raw", "vda")], config)
    assert not result.allowed


def test_a_revoked_image_still_listed_by_a_vo_role_is_not_installed(world: World) -> None:
    from imagefactory.attest.keys import load_public_key
    from imagefactory.catalog.ops import delegate

    key = world.vo_key("atlas")
    delegate(world.catalog, "atlas", [load_public_key(Path(str(key) + ".pub"))])
    world.publish(world.image(), vo_signer="atlas")
    revoke(world.catalog, "atlas-wn", "1.0", "bad")  # no VO key: the VO role keeps listing it
    assert world.catalog.load().roles["vo.atlas"].signed.targets
    world.pull()
    assert world.installed() == []


def test_a_vo_delegated_before_it_published_does_not_stop_the_pull(world: World) -> None:
    from imagefactory.attest.keys import load_public_key
    from imagefactory.catalog.ops import delegate

    world.publish(world.image())
    key = world.vo_key("cms")  # the site's policy now knows cms too
    delegate(world.catalog, "cms", [load_public_key(Path(str(key) + ".pub"))])
    world.pull()
    assert world.installed() == [KEY]


def test_an_expired_image_leaves_the_store(world: World) -> None:
    world.publish(world.image(days=2))
    world.pull()
    later = datetime.now(UTC) + timedelta(days=3)
    result = world.pull(now=later)
    assert world.installed() == []
    assert [e.code for e in result.events if e.image == KEY] == ["expired", "expired"]


def test_an_image_withdrawn_from_the_catalog_leaves_the_store(world: World) -> None:
    world.publish(world.image())
    world.pull()
    with world.catalog.transaction() as tx:
        tx.remove_target("targets", "atlas/atlas-wn/1.0.json")
    result = world.pull()
    assert world.installed() == []
    assert [e.code for e in result.events if e.action == "removed"] == ["withdrawn"]


def test_store_list_and_image_list_export(world: World) -> None:
    world.publish(world.image())
    world.pull()
    [entry] = store_list(Store(world.store))
    assert entry["image"] == KEY
    assert entry["disk"].endswith(".raw")
    doc = image_list(Store(world.store))
    [item] = doc["hv:imagelist"]["hv:images"]
    assert item["hv:image"]["hv:version"] == "1.0"
    assert item["hv:image"]["hv:uri"].startswith("file://")
    assert item["hv:image"]["ad:vo"] == "atlas"
