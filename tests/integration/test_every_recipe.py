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
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagefactory.diskformat import check_safe
from imagefactory.recipe import load_recipe
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
