"""A cache hit in the pipeline: copied out into staging, or not at all when the output has it."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.cache import file_digest
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.builder.label_steps import METADATA_FILES
from imagefactory.builder.output import final_dir
from imagefactory.mirrors import BaseArchive
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe, load_recipe
from imagefactory.settings import Settings
from imagefactory.vocab import Distro
from tests.conftest import RECIPES

ARCHIVE = BaseArchive(Distro.DEBIAN, "bookworm", "http://m.test/debian", None, "settings")
DISK = "atlas-wn-debian12-1.0.qcow2"


def _ctx(tmp_path: Path, recipe: Recipe, **options: bool) -> BuildContext:
    output = tmp_path / "images"
    output.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output))
    ctx = BuildContext(
        recipe=recipe,
        settings=Settings(cache_dir=tmp_path / "cache"),
        options=BuildOptions(**options),
        progress=Progress(stream=io.StringIO()),
        staging=staging,
        logfile=io.StringIO(),
    )
    ctx.archive = ARCHIVE
    ctx.fingerprint = {"bookworm": "sha256:aa"}
    ctx.element = write_element(recipe, staging / "elements")
    return ctx


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Recipe, str]:
    """The example recipe with a cache entry under its key (a fake disk and metadata)."""
    monkeypatch.setattr(pipeline, "tool_versions", lambda: {"diskimage-builder": "3.43"})
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)  # a miss: it names the key
    assert ctx.hit is None
    files = {DISK: ctx.staging / DISK}
    files[DISK].write_bytes(b"disk bytes")
    for name in METADATA_FILES:
        files[name] = ctx.staging / name
        files[name].write_text("{}")
    digests = {name: file_digest(path) for name, path in files.items()}
    record = {"disk": {"files": {DISK: {"sha256": digests[DISK]}}}, "created": "then"}
    ctx.cache.store(ctx.key, files, digests, record)
    return recipe, ctx.key


def _publish_by_hand(tmp_path: Path, recipe: Recipe, key: str) -> Path:
    final = final_dir(tmp_path / "images", recipe.name, recipe.version)
    final.mkdir(parents=True)
    (final / DISK).write_bytes(b"disk bytes")
    (final / "build.json").write_text(json.dumps({"cache": {"key": key}}))
    return final


def test_a_hit_copies_the_entry_into_staging(tmp_path: Path, cached: tuple[Recipe, str]) -> None:
    recipe, _key = cached
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert ctx.hit is not None
    assert ctx.images == {DISK: ctx.staging / DISK}
    assert (ctx.staging / DISK).read_bytes() == b"disk bytes"


def test_a_hit_the_output_already_holds_copies_nothing(
    tmp_path: Path, cached: tuple[Recipe, str]
) -> None:
    recipe, key = cached
    final = _publish_by_hand(tmp_path, recipe, key)
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert ctx.hit is not None
    assert ctx.images == {DISK: final / DISK}
    assert not (ctx.staging / DISK).exists()


def test_another_build_in_the_output_or_a_boot_test_to_run_still_copies(
    tmp_path: Path, cached: tuple[Recipe, str]
) -> None:
    recipe, key = cached
    _publish_by_hand(tmp_path, recipe, "another-key")
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert (ctx.staging / DISK).exists()
    # The same build, but this rebuild boot-tests it and the entry has no boot test yet.
    other = tmp_path / "other"
    other.mkdir()
    _publish_by_hand(other, recipe, key)
    ctx = _ctx(tmp_path, recipe, boot_test=True)
    pipeline.lookup_cache(ctx)
    assert (ctx.staging / DISK).exists()
