"""Pull never replaces an installed version in place under the overlays made on it.

A catalog that describes an installed version differently (its descriptor
changed) makes pull reinstall that version under the same path: with an
instance over it, that would change the base under a running job's overlay.
"""

from __future__ import annotations

import os

from imagefactory.instances.live import discard
from imagefactory.store.layout import Store
from tests.instances.conftest import KEY, Site


def _descriptor_changed(site: Site) -> None:
    """What pull sees when the catalog's descriptor of KEY is not the installed one's."""
    store = Store(site.store)
    state = store.load_state()
    state.images[KEY]["descriptor"] = "0" * 64
    store.save_state(state)


def test_a_held_version_is_not_replaced_until_its_instances_end(site: Site) -> None:
    instance = site.instantiate("1001")
    disk = instance.base
    before = os.stat(disk)
    _descriptor_changed(site)
    result = site.pull()
    assert [(e.image, e.code) for e in result.events if e.action == "refused"] == [
        (KEY, "store-descriptor-changed"),
        (KEY, "store-in-use"),
    ]
    assert "1001" in next(e.message for e in result.events if e.code == "store-in-use")
    after = os.stat(disk)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert site.gate(instance.overlay)[0]
    # Still the old record: the next pull tries again, and installs once nothing holds it.
    assert Store(site.store).load_state().images[KEY]["descriptor"] == "0" * 64
    discard(site.run_dir, "1001")
    result = site.pull()
    assert result.by_action("installed") == [KEY]
    assert Store(site.store).load_state().images[KEY]["descriptor"] != "0" * 64


def test_an_unheld_version_is_reinstalled(site: Site) -> None:
    _descriptor_changed(site)
    assert site.pull().by_action("installed") == [KEY]
