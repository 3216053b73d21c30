"""A base pull would remove while an instance uses it: retired, kept, refused for new starts.

Both gate paths: by path (libvirt/xl, :func:`check_disks`) and bound to
descriptors (qemu, :func:`bind_qemu`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagefactory.catalog.ops import revoke
from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.check import GateConfig
from imagefactory.gate.qemu import parse_qemu
from imagefactory.instances.live import discard, gc
from imagefactory.instances.make import make_overlay
from imagefactory.instances.rundir import InstanceError
from imagefactory.select.choose import select_image
from imagefactory.select.requirements import parse_requirements
from imagefactory.store.layout import Store
from imagefactory.trust import load_policy
from tests.instances.conftest import KEY, Site

QEMU = "/usr/bin/qemu-system-x86_64"


def _qemu_gate(site: Site, overlay: Path) -> tuple[bool, str]:
    config = GateConfig(load_policy(site.world.policy_path), site.store, run_dir=site.run_dir)
    command = parse_qemu([QEMU, "-drive", f"file={overlay},format=qcow2"])
    with bind_qemu(command, config) as bound:
        return bound.result.allowed, bound.result.render("t")


def _revoke_and_pull(site: Site) -> None:
    revoke(site.world.catalog, "atlas-wn", "1.0", "compromised key")
    result = site.pull()
    events = [(e.image, e.action, e.code) for e in result.events if e.action != "skipped"]
    assert events == [(KEY, "retired", "revoked")]


def test_a_revoked_base_in_use_is_retired_not_removed(site: Site) -> None:
    overlay = site.instantiate("4711").overlay
    revoke(site.world.catalog, "atlas-wn", "1.0", "compromised key")
    result = site.pull()
    retired = [e for e in result.events if e.action == "retired"]
    assert [e.image for e in retired] == [KEY]
    assert "job(s) 4711" in retired[0].message
    assert "compromised key" in retired[0].message
    assert site.image.is_dir()
    # The instance still works: its backing chain opens.
    subprocess.run(["qemu-img", "info", "--backing-chain", str(overlay)], check=True)
    assert Store(site.store).retired()[KEY]["held_by"] == ["4711"]


def test_the_gate_refuses_an_instance_whose_base_was_revoked_after_it_was_made(
    site: Site,
) -> None:
    overlay = site.instantiate("4711").overlay
    assert site.gate(overlay)[0]
    _revoke_and_pull(site)
    allowed, text = site.gate(overlay)
    assert not allowed
    assert "gate-retired" in text
    assert "a revoked image starts no instance" in text
    allowed, text = _qemu_gate(site, overlay)
    assert not allowed
    assert "a revoked image starts no instance" in text


def test_instantiate_refuses_a_retired_base(site: Site) -> None:
    site.instantiate("4711")
    _revoke_and_pull(site)
    with pytest.raises(InstanceError, match="retired from the store"):
        site.instantiate("4712")


def test_a_retired_base_leaves_with_its_last_instance(site: Site) -> None:
    site.instantiate("4711")
    _revoke_and_pull(site)
    assert site.pull().by_action("retired") == [KEY]  # still held: still kept
    discard(site.run_dir, "4711")
    assert site.pull().by_action("removed") == [KEY]
    assert not site.image.exists()
    assert Store(site.store).retired() == {}


def test_gc_removes_a_retired_base_no_instance_holds(site: Site) -> None:
    site.instantiate("4711")
    _revoke_and_pull(site)
    assert gc(site.run_dir, store=site.store).retired_removed == []
    assert site.image.exists()
    discard(site.run_dir, "4711")
    assert gc(site.run_dir, store=site.store).retired_removed == [KEY]
    assert not site.image.exists()
    state = Store(site.store).load_state()
    assert KEY not in state.images
    assert state.retired == {}


def test_a_superseded_base_keeps_its_instances_but_starts_no_new_ones(site: Site) -> None:
    old = site.instantiate("1").overlay
    site.world.publish(site.world.image(version="1.1"))
    result = site.pull()
    assert result.by_action("retired") == [KEY]
    assert result.by_action("installed") == ["atlas/atlas-wn/1.1"]
    assert site.gate(old)[0]
    assert _qemu_gate(site, old)[0]
    # An overlay made after the retirement (not through instantiate, which refuses).
    late = make_overlay(site.image, site.run_dir, "2")
    allowed, text = site.gate(late)
    assert not allowed
    assert "made after it" in text
    allowed, text = site.gate(next(site.image.glob("*.raw")), "raw")
    assert not allowed
    assert "only for the instances made before" in text
    assert site.instantiate("3", site.store / "atlas" / "atlas-wn" / "1.1").overlay.exists()


def test_select_never_offers_a_retired_image(site: Site) -> None:
    site.instantiate("1")
    site.world.publish(site.world.image(version="1.1"))
    site.pull()
    selection = select_image(
        site.store,
        load_policy(site.world.policy_path),
        parse_requirements(["vo=atlas,version=1.0"]),
    )
    assert selection.chosen is None
    (old,) = [e for e in selection.explanations if e.key == KEY]
    assert [r.code for r in old.reasons] == ["retired"]
    assert "superseded" in old.reasons[0].message
