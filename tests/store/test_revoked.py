"""The revocation list a store's last pull verified, read offline."""

from __future__ import annotations

from pathlib import Path

from imagefactory.catalog.ops import revoke
from imagefactory.store.layout import Store
from imagefactory.store.revoked import local_revocations
from tests.catalog.world import make_world


def test_a_store_that_never_pulled_knows_no_revocation(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.create()
    found = local_revocations(store)
    assert (found.reasons, found.problem) == ({}, None)


def test_the_list_is_what_the_catalog_signed_and_tampering_is_named(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.publish(world.image("atlas-wn", "1.0"))
    world.pull()
    revoke(world.catalog, "atlas-wn", "1.0", "broken kernel")
    world.pull()
    store = Store(world.store)
    assert local_revocations(store).reasons == {"atlas/atlas-wn/1.0": "broken kernel"}
    cached = store.state_dir / "descriptors" / "revoked.json"
    cached.write_bytes(cached.read_bytes().replace(b"broken kernel", b"fine kernel!!"))
    found = local_revocations(store)
    assert found.reasons == {}
    assert found.problem is not None
    assert str(cached) in found.problem
