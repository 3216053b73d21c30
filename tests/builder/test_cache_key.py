"""The build's cache key follows every input: recipe, element, tools, archive."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.mirrors import BaseArchive
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe, load_recipe
from imagefactory.settings import Settings
from imagefactory.vocab import Distro
from tests.conftest import RECIPES

ARCHIVE = BaseArchive(Distro.DEBIAN, "bookworm", "http://m.test/debian", None, "settings")
FINGERPRINT = {"bookworm": "sha256:aa", "bookworm-updates": "sha256:bb"}


def _key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recipe: Recipe,
    *,
    fingerprint: dict[str, str] = FINGERPRINT,
    tools: dict[str, str] | None = None,
) -> str:
    monkeypatch.setattr(pipeline, "tool_versions", lambda: tools or {"diskimage-builder": "3.43"})
    staging = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    staging.mkdir()
    ctx = BuildContext(
        recipe=recipe,
        settings=Settings(cache_dir=tmp_path / "cache"),
        options=BuildOptions(use_cache=False),
        progress=Progress(stream=io.StringIO()),
        staging=staging,
        logfile=io.StringIO(),
    )
    ctx.archive = ARCHIVE
    ctx.fingerprint = fingerprint
    ctx.element = write_element(recipe, staging / "elements")
    pipeline.lookup_cache(ctx)
    return ctx.key


def test_key_is_stable_and_follows_each_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    base = _key(tmp_path, monkeypatch, recipe)
    assert _key(tmp_path, monkeypatch, recipe) == base
    updated = {**FINGERPRINT, "bookworm-updates": "sha256:cc"}  # the archive published updates
    assert _key(tmp_path, monkeypatch, recipe, fingerprint=updated) != base
    newer = {"diskimage-builder": "3.44"}
    assert _key(tmp_path, monkeypatch, recipe, tools=newer) != base
    relabelled = dataclasses.replace(recipe, labels={"site": "other"})
    assert _key(tmp_path, monkeypatch, relabelled) != base


def test_key_follows_the_code_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    base = _key(tmp_path, monkeypatch, recipe)
    monkeypatch.setattr(pipeline, "code_digest", lambda: "sha256:edited-assembly-code")
    assert _key(tmp_path, monkeypatch, recipe) != base
