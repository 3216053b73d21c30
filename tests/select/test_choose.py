"""select over a store made by the real publish and pull path: what is chosen, and why not.

The images are the catalog tests' small signed image directories, published
into a real TUF catalog and pulled (verified) into a real store.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imagefactory.catalog.ops import revoke
from imagefactory.errors import FileAccessError
from imagefactory.select.candidates import Image
from imagefactory.select.choose import Selection, rank_images, select_image
from imagefactory.select.ranks import Rank
from imagefactory.select.requirements import parse_requirements
from imagefactory.store.layout import Store
from imagefactory.store.transport import Source
from imagefactory.store.updater import CatalogClient
from imagefactory.trust import load_policy
from tests.catalog.world import World, make_world
from tests.fakes.imagedirs import key_signer, vo_rules, write_policy


def run(world: World, *require: str, rank: Rank = Rank.NEWEST, **kw: Any) -> Selection:
    policy = load_policy(world.policy_path)
    requirements = parse_requirements(list(require), sorted(policy.vos))
    return select_image(world.store, policy, requirements, rank, **kw)


def status(selection: Selection) -> dict[str, tuple[str, list[str]]]:
    return {e.key: (e.status, [r.code for r in e.reasons]) for e in selection.explanations}


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.publish(world.image("atlas-wn", "1.0"))
    world.publish(world.image("cms-wn", "1.0", vo="cms"))
    result = world.pull()
    assert result.ok, result.to_dict()
    return world


def test_the_matching_verified_image_is_chosen_and_every_other_is_explained(
    world: World,
) -> None:
    selection = run(world, "distro=debian,release>=12,arch=x86_64,vo=atlas,root_policy=none")
    assert selection.chosen is not None
    assert selection.chosen.key == "atlas/atlas-wn/1.0"
    assert selection.chosen.path == world.store / "atlas" / "atlas-wn" / "1.0"
    assert status(selection) == {
        "atlas/atlas-wn/1.0": ("chosen", []),
        "cms/cms-wn/1.0": ("no-match", ["no-match"]),
    }
    [why] = selection.explanations[1].reasons
    assert why.message == "vo=atlas: the image's vo is cms"


def test_no_match_leaves_nothing_chosen(world: World) -> None:
    selection = run(world, "arch=aarch64")
    assert not selection.ok
    assert {s for s, _ in status(selection).values()} == {"no-match"}


def test_an_image_changed_since_pull_verified_it_is_refused(world: World) -> None:
    labels = world.store / "atlas" / "atlas-wn" / "1.0" / "labels.json"
    os.utime(labels, (1, 1))  # same bytes, another mtime: the verified cache's key differs
    selection = run(world, "vo=atlas")
    assert selection.chosen is None
    assert status(selection)["atlas/atlas-wn/1.0"] == ("refused", ["not-verified"])


def test_a_changed_policy_means_nothing_is_verified_until_the_next_pull(world: World) -> None:
    keys = world.vo_keys
    write_policy(
        world.policy_path,
        {v: vo_rules(key_signer(f"{v}-vo", k), require_audit=True) for v, k in keys.items()},
    )
    assert status(run(world))["atlas/atlas-wn/1.0"] == ("refused", ["not-verified"])
    world.pull()  # verifies again under the new policy
    assert {s for s, _ in status(run(world)).values()} == {"chosen", "outranked"}


def test_what_the_site_policy_refuses_is_named(world: World) -> None:
    keys = world.vo_keys
    write_policy(
        world.policy_path,
        {
            "atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]), arches=["aarch64"]),
            "cms": vo_rules(key_signer("cms-vo", keys["cms"])),
        },
    )
    selection = run(world)
    state, codes = status(selection)["atlas/atlas-wn/1.0"]
    assert (state, codes) == ("refused", ["policy-refused"])
    assert "arch 'x86_64' not in [aarch64]" in selection.explanations[0].reasons[0].message
    write_policy(world.policy_path, {"cms": vo_rules(key_signer("cms-vo", keys["cms"]))})
    assert status(run(world))["atlas/atlas-wn/1.0"] == ("refused", ["not-in-policy"])


def test_an_expired_image_is_refused(world: World) -> None:
    later = datetime.now(UTC) + timedelta(days=40)
    selection = run(world, now=later)
    assert {k: c for k, (_, c) in status(selection).items()} == {
        "atlas/atlas-wn/1.0": ["expired"],
        "cms/cms-wn/1.0": ["expired"],
    }


def test_a_revocation_the_last_pull_learnt_refuses_the_image_before_it_is_removed(
    world: World,
) -> None:
    revoke(world.catalog, "atlas-wn", "1.0", "CVE-2026-0001 in the kernel")
    # A pull killed after its refresh and before it pruned the store: the signed
    # revocation list is in the store's state, the image still in the store.
    client = CatalogClient(
        Source.parse(str(world.catalog.directory), 5.0),
        world.root_json,
        Store(world.store).state_dir,
    )
    client.refresh({"atlas", "cms"})
    assert (world.store / "atlas" / "atlas-wn" / "1.0").is_dir()
    selection = run(world, "vo=atlas|cms")
    assert status(selection)["atlas/atlas-wn/1.0"] == ("refused", ["revoked"])
    assert "CVE-2026-0001" in selection.explanations[0].reasons[0].message
    assert selection.chosen is not None
    assert selection.chosen.key == "cms/cms-wn/1.0"


def test_a_tampered_revocation_list_refuses_every_image(world: World) -> None:
    revoke(world.catalog, "cms-wn", "1.0", "withdrawn")
    world.pull()
    cached = world.store / ".pull" / "descriptors" / "revoked.json"
    cached.write_text(json.dumps({"revoked": []}))  # not the bytes the catalog signed
    selection = run(world)
    assert status(selection) == {"atlas/atlas-wn/1.0": ("refused", ["revocations-unreadable"])}


def test_an_image_copied_into_the_store_by_hand_is_not_used(world: World) -> None:
    source = world.store / "atlas" / "atlas-wn" / "1.0"
    shutil.copytree(source, world.store / "atlas" / "atlas-wn" / "9.0")
    assert status(run(world, "vo=atlas"))["atlas/atlas-wn/9.0"] == ("refused", ["not-installed"])


def test_unreadable_labels_are_named(world: World) -> None:
    image = world.store / "atlas" / "atlas-wn" / "1.0"
    os.chmod(image, 0o755)
    labels = image / "labels.json"
    labels.chmod(0o644)
    doc = json.loads(labels.read_text())
    doc["os"]["arch"] = ["x86_64"]
    labels.write_text(json.dumps(doc))
    selection = run(world)
    assert status(selection)["atlas/atlas-wn/1.0"] == ("refused", ["labels-unreadable"])
    assert "os.arch is ['x86_64'], expected a str" in selection.explanations[0].reasons[0].message
    labels.write_text("{not json")
    assert status(run(world))["atlas/atlas-wn/1.0"] == ("refused", ["labels-unreadable"])


def test_a_version_directory_without_labels_is_named_not_skipped(world: World) -> None:
    stray = world.store / "atlas" / "atlas-wn" / "2.0"
    stray.mkdir()
    (stray / "disk.qcow2").write_bytes(b"not an image pull installed")
    # Among ATLAS's images only: the CMS image published after it can be newer by a
    # second ("created" has seconds), and would then outrank it.
    selection = run(world, "vo=atlas")
    assert status(selection)["atlas/atlas-wn/2.0"] == ("refused", ["labels-unreadable"])
    assert status(selection)["atlas/atlas-wn/1.0"][0] == "chosen"
    assert "atlas/atlas-wn/2.0" not in Store(world.store).installed()


def test_a_missing_store_is_an_error_not_a_no_match(tmp_path: Path, world: World) -> None:
    policy = load_policy(world.policy_path)
    with pytest.raises(FileAccessError, match="no such directory"):
        select_image(tmp_path / "nowhere", policy, parse_requirements([], None))


def test_an_outranked_image_is_told_what_put_the_chosen_one_ahead(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.publish(world.image("atlas-a", "1.0"))
    world.publish(world.image("atlas-b", "1.0"))
    world.publish(world.image("atlas-c", "2.0"))
    world.pull()
    selection = run(world, "vo=atlas", rank=Rank.VERSION)
    assert selection.chosen is not None
    assert selection.chosen.key == "atlas/atlas-c/2.0"
    outranked = [e for e in selection.explanations if e.status == "outranked"]
    assert [e.key for e in outranked] == ["atlas/atlas-a/1.0", "atlas/atlas-b/1.0"]
    for explanation in outranked:
        assert explanation.reasons[0].message.endswith(
            "by version: version 1.0; atlas/atlas-c/2.0 has 2.0"
        )


def image(key: str, **facts: Any) -> Image:
    base = {
        "image.created": "2026-11-20T09:00:00Z",
        "image.version": "1.0",
        "os.version": "12",
        "disk.size": 1000,
    }
    return Image(key, Path("/store") / key, {**base, **facts})


def test_every_rank_orders_as_documented_with_a_deterministic_tie_break() -> None:
    old = image("atlas/b/1.9", **{"image.version": "1.9", "disk.size": 10})
    new = image(
        "atlas/a/1.10", **{"image.version": "1.10", "image.created": "2026-11-21T09:00:00Z"}
    )
    jammy = image("cms/u/1.0", **{"os.version": "22.04", "disk.size": 5000})
    images = [old, new, jammy]
    assert next(i.key for i in rank_images(images, Rank.NEWEST)) == "atlas/a/1.10"
    assert [i.key for i in rank_images(images, Rank.VERSION)] == [
        "atlas/a/1.10",
        "atlas/b/1.9",
        "cms/u/1.0",
    ]
    assert next(i.key for i in rank_images(images, Rank.RELEASE)) == "cms/u/1.0"
    assert [i.key for i in rank_images(images, Rank.SMALLEST)] == [
        "atlas/b/1.9",
        "atlas/a/1.10",
        "cms/u/1.0",
    ]
    twins = [image("vo/z/1.0"), image("vo/a/1.0"), image("vo/m/1.0")]
    for rank in Rank:
        assert [i.key for i in rank_images(twins, rank)] == ["vo/a/1.0", "vo/m/1.0", "vo/z/1.0"]
        assert [i.key for i in rank_images(list(reversed(twins)), rank)] == [
            "vo/a/1.0",
            "vo/m/1.0",
            "vo/z/1.0",
        ]


def test_without_explain_the_same_image_is_chosen_checking_fewer_files(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.publish(world.image("atlas-wn", "1.0"))
    world.publish(world.image("atlas-wn-new", "2.0"))
    world.publish(world.image("atlas-wn-old", "0.5"))
    world.pull()
    os.utime(world.store / "atlas" / "atlas-wn-new" / "2.0" / "labels.json", (1, 1))
    full = run(world, "vo=atlas", rank=Rank.VERSION)
    quick = run(world, "vo=atlas", rank=Rank.VERSION, explain=False)
    for selection in (full, quick):
        assert selection.chosen is not None
        assert selection.chosen.key == "atlas/atlas-wn/1.0"
        assert status(selection)["atlas/atlas-wn-new/2.0"] == ("refused", ["not-verified"])
        assert status(selection)["atlas/atlas-wn-old/0.5"] == ("outranked", ["outranked"])


def test_a_pull_state_this_user_cannot_read_is_an_error_not_a_no_match(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(self: Store) -> None:
        raise PermissionError(13, "Permission denied")

    # As root the test cannot be denied for real; a non-root prologue on root's store is.
    monkeypatch.setattr(Store, "load_state", denied)
    with pytest.raises(FileAccessError, match="cannot read the pull state: permission denied"):
        run(world)
