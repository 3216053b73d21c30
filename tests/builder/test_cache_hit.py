"""A cache hit in the pipeline: copied out into staging, or not at all when the output has it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.cache import file_digest
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.label_steps import METADATA_FILES
from imagefactory.builder.output import final_dir, output_unchanged, publish, record_output
from imagefactory.recipe import Recipe, load_recipe
from tests.builder.contexts import staged_context
from tests.conftest import RECIPES

DISK = "atlas-wn-debian12-1.0.qcow2"


def _ctx(tmp_path: Path, recipe: Recipe, **options: bool) -> BuildContext:
    output = tmp_path / "images"
    output.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output))
    return staged_context(recipe, staging, tmp_path / "cache", BuildOptions(**options))


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Recipe, str]:
    """The example recipe with a cache entry under its key (a fake disk and metadata)."""
    monkeypatch.setattr(pipeline, "tool_versions", lambda *_: {"diskimage-builder": "3.43"})
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


def _publish_by_hand(tmp_path: Path, recipe: Recipe, key: str, *, recorded: bool = True) -> Path:
    """An output of ``key`` as a build leaves it: published, its identities recorded."""
    final = final_dir(tmp_path / "images", recipe.name, recipe.version)
    final.mkdir(parents=True)
    (final / DISK).write_bytes(b"disk bytes")
    (final / "build.json").write_text(json.dumps({"cache": {"key": key}}))
    if recorded:
        record_output(final, key, tmp_path / "cache" / "outputs")
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


def _rewrite(path: Path) -> None:
    """The same bytes written again: only the identity says it was touched."""
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes())


def _replace(path: Path) -> None:
    new = path.with_name(".new")
    new.write_bytes(path.read_bytes())
    st = path.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # even the mtime put back
    new.replace(path)


def _symlink(path: Path) -> None:
    kept = path.parent.parent / "kept"
    path.rename(kept)
    path.symlink_to(kept)


CHANGES: dict[str, Callable[[Path], object]] = {
    "rewritten with the same bytes": _rewrite,
    "replaced by a copy with the same mtime": _replace,
    "chmod": lambda path: os.chmod(path, 0o644),
    "replaced by a symlink to itself": _symlink,
    "removed": lambda path: path.unlink(),
    "a file added beside it": lambda path: (path.parent / "extra").write_text("x"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_output_changed_since_it_was_published_is_made_again(
    tmp_path: Path, cached: tuple[Recipe, str], change: str
) -> None:
    """'Up to date' by file identity, never by names: any change copies from the cache."""
    recipe, key = cached
    final = _publish_by_hand(tmp_path, recipe, key)
    records = tmp_path / "cache" / "outputs"
    assert output_unchanged(final, key, records)
    CHANGES[change](final / DISK)
    assert not output_unchanged(final, key, records)
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert ctx.images == {DISK: ctx.staging / DISK}
    assert (ctx.staging / DISK).read_bytes() == b"disk bytes"


def test_an_output_with_no_identities_recorded_is_not_trusted_by_its_names(
    tmp_path: Path, cached: tuple[Recipe, str]
) -> None:
    recipe, key = cached
    final = _publish_by_hand(tmp_path, recipe, key, recorded=False)
    assert not output_unchanged(final, key, tmp_path / "cache" / "outputs")
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert (ctx.staging / DISK).exists()
    # Nor an output recorded for another key, or the record of another directory.
    record_output(final, "another-key", tmp_path / "cache" / "outputs")
    assert not output_unchanged(final, key, tmp_path / "cache" / "outputs")


def test_the_same_build_over_a_changed_output_repairs_it_and_records_it(
    tmp_path: Path, cached: tuple[Recipe, str]
) -> None:
    """publish: same key but changed -> replaced by the staging copy, never kept as it is."""
    recipe, key = cached
    final = _publish_by_hand(tmp_path, recipe, key)
    records = tmp_path / "cache" / "outputs"
    os.chmod(final / DISK, 0o666)
    (final / DISK).write_bytes(b"tampered")
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    pipeline.write_record(ctx)
    shutil.rmtree(ctx.staging / "elements")  # as build() does before it publishes

    def unchanged(path: Path) -> bool:
        return output_unchanged(path, key, records)

    assert publish(ctx.staging, final, unchanged=unchanged)
    assert (final / DISK).read_bytes() == b"disk bytes"
    assert (final / DISK).stat().st_ino != (ctx.hit.path / DISK).stat().st_ino  # type: ignore[union-attr]
    record_output(final, key, records)
    assert output_unchanged(final, key, records)
    # Now up to date: the next build of the key copies nothing and keeps the output.
    again = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(again)
    assert again.images == {DISK: final / DISK}
    pipeline.write_record(again)
    shutil.rmtree(again.staging / "elements")
    assert not publish(again.staging, final, unchanged=unchanged)


def test_the_index_and_package_checks_wait_for_a_miss(
    tmp_path: Path, cached: tuple[Recipe, str]
) -> None:
    """The archive step fetches every InRelease (the key needs them, hit or not); the
    index HEADs and the package lookup protect diskimage-builder's apt and run only
    before it, on a miss."""
    names = [s.name for s in pipeline.STEPS]
    assert names.index("archive") < names.index("cache") < names.index("packages")
    # Right before the first apt: the layer's diskimage-builder run, then the recipe's.
    assert names.index("packages") == names.index("layer") - 1 == names.index("dib") - 2
    (step,) = (s for s in pipeline.STEPS if s.name == "packages")
    recipe, _key = cached
    ctx = _ctx(tmp_path, recipe)
    pipeline.lookup_cache(ctx)
    assert ctx.hit is not None
    assert step.skip(ctx) == "cache hit"
    ctx.hit = None
    assert step.skip(ctx) is None


def test_the_accelerator_probe_starts_only_on_a_miss(
    tmp_path: Path, cached: tuple[Recipe, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that runs a KVM guest would hold up a hit's exit until its qemu ends."""
    probes: list[str] = []
    monkeypatch.setattr(pipeline, "probe_in_background", lambda *a: probes.append(a[0]))
    monkeypatch.setattr(pipeline, "require_build_host", lambda *a: None)
    monkeypatch.setattr(pipeline, "check_indexes", lambda *a: None)
    monkeypatch.setattr(pipeline, "check_recipe_packages", lambda *a, **k: None)
    recipe, _key = cached
    ctx = _ctx(tmp_path, recipe)
    pipeline.check_host(ctx)
    pipeline.lookup_cache(ctx)
    assert ctx.hit is not None
    assert probes == []
    pipeline.check_packages(ctx)  # the first step a miss runs
    assert probes == ["auto"]
