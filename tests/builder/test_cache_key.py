"""The build's cache key follows every input: recipe, element, tools, archive."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imagefactory.aptrepo import VerifiedRepository
from imagefactory.builder import pipeline
from imagefactory.builder.context import BuildOptions
from imagefactory.pgpkey import PublicKey
from imagefactory.recipe import BuildLimits, Recipe, RepositoryAllowance, load_recipe
from tests.builder.contexts import staged_context
from tests.conftest import RECIPES

FINGERPRINT = {"bookworm": "sha256:aa", "bookworm-updates": "sha256:bb"}


def _key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recipe: Recipe,
    *,
    fingerprint: dict[str, str] = FINGERPRINT,
    tools: dict[str, str] | None = None,
    repositories: list[VerifiedRepository] | None = None,
) -> str:
    monkeypatch.setattr(
        pipeline, "tool_versions", lambda *_: tools or {"diskimage-builder": "3.43"}
    )
    staging = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    staging.mkdir()
    ctx = staged_context(
        recipe,
        staging,
        tmp_path / "cache",
        BuildOptions(use_cache=False),
        fingerprint=fingerprint,
        repositories=repositories,
    )
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


def test_key_follows_each_repository_and_its_verified_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    url = "https://repo.example.org/cvmfs"
    path = tmp_path / "wn.yaml"
    limits = BuildLimits(
        include_roots=(RECIPES,),
        allowed_repositories=(RepositoryAllowance(url, frozenset({fpr})),),
    )

    def recipe(suite: str = "stable", components: str = "[main]") -> Recipe:
        path.write_text(
            "extends: atlas-wn-debian12.yaml\nrepositories:\n"
            f"  - {{name: cvmfs, url: {url}, suites: [{suite}], components: {components},"
            f" key: {{fingerprint: {fpr}}}}}\n"
        )
        return load_recipe(path, limits)

    def verified(recipe: Recipe, release: bytes = b"Suite: stable\n") -> VerifiedRepository:
        key = PublicKey(binary=b"key", fingerprint=fpr)
        [repository] = recipe.repositories
        return VerifiedRepository(repository, key, {repository.suites[0]: release})

    plain = _key(tmp_path, monkeypatch, load_recipe(RECIPES / "atlas-wn-debian12.yaml"))
    first = recipe()
    base = _key(tmp_path, monkeypatch, first, repositories=[verified(first)])
    assert base != plain
    assert _key(tmp_path, monkeypatch, first, repositories=[verified(first)]) == base
    # The repository published something: its signed Release changed.
    updated = verified(first, b"Suite: stable\nDate: later\n")
    assert _key(tmp_path, monkeypatch, first, repositories=[updated]) != base
    for other in (recipe(suite="testing"), recipe(components="[main, contrib]")):
        assert _key(tmp_path, monkeypatch, other, repositories=[verified(other)]) != base
