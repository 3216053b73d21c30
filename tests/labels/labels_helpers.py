"""A complete, valid labels document made the real way (from facts on the fake guest)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from imagefactory.audit import run_audit
from imagefactory.guest.facts import os_facts, package_facts
from imagefactory.harden.apply import apply_profile
from imagefactory.labels.make import DiskFacts, make_labels
from imagefactory.profiles import load_profile
from imagefactory.recipe import DEFAULT_LIMITS, Recipe, load_recipe
from imagefactory.sbom import make_sbom, sbom_ref
from tests.fakes.guest import FakeGuest, unhardened_tree

REPO = Path(__file__).resolve().parents[2]
CREATED = dt.datetime(2026, 11, 25, 9, 0, 0, tzinfo=dt.UTC)
DISK = DiskFacts(
    file="site-base-debian12-1.0.qcow2",
    format="qcow2",
    size=123456,
    virtual_size=2 << 30,
    sha256="a" * 64,
    sha512="b" * 128,
    boot_mode="bios",
)


def recipe(name: str = "atlas-wn-debian12") -> Recipe:
    return load_recipe(REPO / "recipes" / f"{name}.yaml", DEFAULT_LIMITS)


def labels_for(r: Recipe, guest: FakeGuest | None = None) -> tuple[dict[str, Any], str]:
    g = guest or unhardened_tree()
    profile = load_profile(r.hardening)
    apply_profile(g, profile, r.root_policy)
    facts, packages = os_facts(g), package_facts(g)
    sbom = make_sbom(
        r.name, r.version, facts, packages.packages, disk_sha256="a" * 64, created=CREATED
    )
    labels = make_labels(
        r,
        disk=DISK,
        os=facts,
        packages=packages,
        sbom=sbom_ref(sbom),
        audit=run_audit(g, profile, r.root_policy),
        profile=profile,
        builder={"imagefactory": "0.1.0", "diskimage-builder": "3.43.0", "libguestfs": "1.48.6"},
        created=CREATED,
    )
    return labels, sbom
