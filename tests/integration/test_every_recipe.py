"""Every shipped recipe builds and boots (the example is covered by
test_build_boot.py in the same session). Slow: a few minutes per recipe, far
more for aarch64 under emulation.

CI's slow set builds one image per distinct code path: x86_64 BIOS (the
example), x86_64 UEFI, i386, and Ubuntu (its own diskimage-builder element,
keyring and kernel). The other flavours carry the ``flavours`` marker, which
the default options deselect, so CI stays inside its time; ``scripts/test -m
flavours`` builds them: the site base, Debian 13 and Ubuntu 22.04 (the same
code paths with another release), and aarch64, whose tree diskimage-builder
builds under qemu-user emulation: over 30 minutes on this 2-core host before
its boot test, too long for CI's budget.

The i386 recipe is built with ``disk.compress: true``, so the compressed qcow2
path (audit, labels, boot test, sign, verify with inspection, the gate and an
overlay) runs on a real disk without another diskimage-builder run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefactory.cli import main
from imagefactory.diskformat import check_safe
from imagefactory.errors import EXIT_OK
from imagefactory.gate.check import GateConfig, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.instances.make import make_overlay
from imagefactory.recipe import load_recipe
from imagefactory.trust import load_policy
from imagefactory.verify.cache import VerifiedCache
from tests.conftest import RECIPES
from tests.integration_images import EXAMPLE, Builder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIPPED = sorted(p for p in RECIPES.glob("*.yaml") if p != EXAMPLE)
#: One recipe per code path beyond the example's; the rest are ``flavours``.
CODE_PATHS = {"atlas-wn-debian12-uefi", "debian12-i386", "ubuntu2404"}


def test_every_shipped_recipe_is_covered() -> None:
    assert [p.stem for p in SHIPPED] == [
        "atlas-wn-debian12-aarch64",
        "atlas-wn-debian12-uefi",
        "atlas-wn-debian13",
        "cms-wn-ubuntu2204",
        "debian12-i386",
        "site-base-debian12",
        "ubuntu2404",
    ]


@pytest.mark.parametrize(
    "recipe_path",
    [
        pytest.param(p, id=p.stem, marks=() if p.stem in CODE_PATHS else pytest.mark.flavours)
        for p in SHIPPED
    ],
)
def test_recipe_builds_and_boots(recipe_path: Path, build_recipe: Builder, tmp_path: Path) -> None:
    recipe = load_recipe(recipe_path)
    result = build_recipe(recipe_path, tmp_path)
    record = json.loads((result.directory / "build.json").read_text())
    assert record["boot_test"]["passed"] is True
    assert record["base"]["arch"] == str(recipe.base.arch)
    for name in record["disk"]["files"]:
        check_safe(result.directory / name, declared_format=name.rsplit(".", 1)[1])
    installed = {p["name"]: p["arch"] for p in record["packages"]}
    assert set(recipe.packages) <= set(installed)
    assert recipe.base.arch.dib_arch in set(installed.values())
    console = (result.directory / "boot-test.log").read_text(errors="replace")
    assert "login:" in console
    # Read back from the image (the ESP and its loader), not copied from the recipe.
    labels = json.loads((result.directory / "labels.json").read_text())
    assert labels["disk"]["boot_mode"] == str(recipe.boot)
    assert record["disk"]["partition_table"] == ("gpt" if recipe.boot == "uefi" else "mbr")
    assert labels["os"]["version"].split(".")[0] == recipe.base.version.split(".")[0]
    if recipe.disk.compress:
        check_compressed(result.directory, record, tmp_path)


def check_compressed(image: Path, record: dict[str, Any], tmp_path: Path) -> None:
    """A ``disk.compress`` image (the i386 recipe): its qcow2 holds compressed clusters,
    and that compressed file is what was audited and booted above, and is what a
    site's verify (with a fresh inspection), the gate and an overlay accept."""
    disk = image / f"{image.parent.name}-{image.name}.qcow2"
    check = subprocess.run(
        ["qemu-img", "check", "-f", "qcow2", "--output=json", str(disk)],
        check=True,
        capture_output=True,
        text=True,
    )
    clusters = json.loads(check.stdout)
    assert clusters["compressed-clusters"] > clusters["allocated-clusters"] // 2
    assert record["disk"]["compression"] == "zlib"
    assert record["disk"]["files"][disk.name]["size"] == disk.stat().st_size
    assert record["audit"]["fail"] == 0
    labels = json.loads((image / "labels.json").read_text())
    assert "sha256:" + labels["disk"]["sha256"] == record["disk"]["files"][disk.name]["sha256"]
    # Sign, then verify as a site would, with a fresh libguestfs inspection of the disk.
    site = tmp_path / "site"
    store = site / "store"
    copy = store / labels["vo"][0] / image.parent.name / image.name
    copy.mkdir(parents=True)
    for entry in image.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    assert main(["key", "generate", str(site / "vo-key")]) == EXIT_OK
    assert main(["sign", str(copy), "--key", str(site / "vo-key")]) == EXIT_OK
    rules = {
        "signers": [{"name": "vo", "key": "vo-key.pub"}],
        "distros": ["debian"],
        "releases": ["12"],
        "arches": [labels["os"]["arch"]],
        "models": ["non-persistent"],
        "root_policies": {"non-persistent": ["none"]},
        "require_audit": True,
    }
    for inspect in (True, False):
        policy = site / f"site-{inspect}.yaml"
        doc = {"formats": ["qcow2"], "vos": {labels["vo"][0]: {**rules, "inspect": inspect}}}
        policy.write_text(yaml.safe_dump(doc))
    verify = ["verify", "-q", str(copy), "--policy", str(site / "site-True.yaml")]
    assert main(verify) == EXIT_OK
    # The gate verifies it afresh (its own cache) before a hypervisor may open it,
    # and an instance's overlay over it.
    config = GateConfig(
        load_policy(site / "site-False.yaml"),
        store,
        VerifiedCache(site / "gate-cache"),
        run_dir=site / "run",
    )
    overlay = make_overlay(copy, site / "run", "job1")
    requests = [DiskRequest(str(copy / disk.name), "qcow2", "vda")]
    for request in (requests[0], DiskRequest(str(overlay), "qcow2", "vdb")):
        result = check_disks([request], config)
        assert result.allowed, result.render(request.where)
        assert list(result.verdicts) == [copy]
