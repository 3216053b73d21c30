"""The generated JSON Schema and reference docs, and the shipped example recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefactory.fields.types import ListOf, Struct
from imagefactory.recipe import load_recipe, recipe_json_schema, recipe_reference_markdown
from imagefactory.recipe.fields import RECIPE
from imagefactory.vocab import Arch, Distro
from tests.recipe.recipe_helpers import RECIPES

EXAMPLES = sorted(RECIPES.glob("*.yaml"))


def test_examples_are_shipped() -> None:
    assert [path.name for path in EXAMPLES] == [
        "atlas-wn-debian12-aarch64.yaml",
        "atlas-wn-debian12-uefi.yaml",
        "atlas-wn-debian12.yaml",
        "atlas-wn-debian13.yaml",
        "cms-wn-ubuntu2204.yaml",
        "debian12-i386.yaml",
        "site-base-debian12.yaml",
        "ubuntu2404.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.digest.startswith("sha256:")
    assert recipe.base.distro.supports(recipe.base.arch)


def test_atlas_extends_site_base() -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    assert recipe.vo == "atlas"
    assert recipe.fs_access == ("nfs",)
    assert recipe.endorser == "atlas-images@example.org"
    assert {"chrony", "python3-minimal"} <= set(recipe.packages)
    assert [str(f.path) for f in recipe.files] == ["/etc/motd", "/etc/atlas/wn.conf"]
    assert dict(recipe.labels) == {"site": "example", "experiment": "atlas"}
    assert recipe.sources[1] == (RECIPES / "site-base-debian12.yaml").resolve()


def _walk(schema: Any) -> list[dict[str, Any]]:
    """Every subschema."""
    found = []
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            found += _walk(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _walk(value)
    return found


def test_schema_structure() -> None:
    schema = recipe_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert list(properties) == [spec.name for spec in RECIPE.fields]
    assert schema["then"] == {"required": ["name", "version", "base", "vo"]}
    assert properties["root_policy"]["enum"] == ["none", "site-admin", "user"]
    assert properties["root_policy"]["default"] == "none"
    assert properties["fs_access"]["default"] == ["none"]
    assert properties["disk"]["properties"]["size"]["default"] == "2G"
    assert properties["files"]["items"]["required"] == ["path"]
    assert properties["labels"]["propertyNames"]["pattern"].startswith("^[a-z0-9]")
    for sub in _walk(schema):
        if sub.get("type") == "object" and "properties" in sub:
            assert sub["additionalProperties"] is False
            assert all("description" in p for p in sub["properties"].values())


def test_schema_validates_examples_and_rejects_mistakes() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        document = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(document)) == [], path.name
    base = yaml.safe_load((RECIPES / "ubuntu2404.yaml").read_text())
    mistakes: list[dict[str, Any]] = [
        {**base, "pakages": ["less"]},
        {**base, "base": {"distro": "ubuntu", "release": "24.04", "arch": "i386"}},
        {**base, "base": {"distro": "debian", "release": "noble"}},
        {**base, "version": 1.0},
        {**base, "files": [{"path": "/x", "content": "a", "source": "b"}]},
        {key: value for key, value in base.items() if key != "vo"},
    ]
    for document in mistakes:
        assert list(validator.iter_errors(document)), document


def test_reference_markdown() -> None:
    text = recipe_reference_markdown()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Top level",
        "## `.base`",
        "## `.repositories[]`",
        "## `.repositories[].key`",
        "## `.files[]`",
        "## `.services`",
        "## `.scripts[]`",
        "## `.disk`",
    ]
    assert '| `root_policy` | string | `"none"` | `none`, `site-admin`, `user` |' in text
    assert "| `vo` | string | required |" in text
    assert "user root and site file systems don't mix" in text
    # every field of every mapping has a row
    for struct in [RECIPE, *_structs(RECIPE)]:
        for spec in struct.fields:
            assert f"| `{spec.name}` |" in text


def _structs(struct: Struct) -> list[Struct]:
    found = []
    for spec in struct.fields:
        inner = spec.type.item if isinstance(spec.type, ListOf) else spec.type
        if isinstance(inner, Struct):
            found += [inner, *_structs(inner)]
    return found


def test_vocabulary() -> None:
    assert [a.dib_arch for a in Arch] == ["amd64", "i386", "arm64"]
    assert [a.qemu_system for a in Arch] == [
        "qemu-system-x86_64",
        "qemu-system-x86_64",
        "qemu-system-aarch64",
    ]
    assert [Distro.DEBIAN.kernel_package(a) for a in Arch] == [
        "linux-image-amd64",
        "linux-image-686",
        "linux-image-arm64",
    ]
    assert {Distro.UBUNTU.kernel_package(a) for a in Arch} == {"linux-image-virtual"}
    release = Distro.UBUNTU.release("noble")
    assert release is not None
    assert (release.version, release.codename) == ("24.04", "noble")
    assert Distro.DEBIAN.release("12") == Distro.DEBIAN.release("bookworm")
    assert Distro.DEBIAN.release("noble") is None
    assert not Distro.UBUNTU.supports(Arch.I386)


def test_committed_schema_and_readme_reference_are_current() -> None:
    """recipes/recipe.schema.json and README.md come from the field table."""
    committed = json.loads((RECIPES / "recipe.schema.json").read_text(encoding="utf-8"))
    assert committed == recipe_json_schema(), (
        "regenerate: imagefactory recipe schema --output recipes/recipe.schema.json"
    )
    readme = (RECIPES.parent / "README.md").read_text(encoding="utf-8")
    reference = recipe_reference_markdown().split("\n", 1)[1].strip()  # without the H1
    assert reference in readme, "regenerate the recipe reference: scripts/gen-docs"
