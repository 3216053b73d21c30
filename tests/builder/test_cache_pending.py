"""The cache entry the images are copied into while the audit runs, committed by ``store``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.cache import BuildCache, PendingEntry
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.label_steps import METADATA_FILES
from imagefactory.recipe import load_recipe
from tests.builder.contexts import staged_context

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(cache: BuildCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if p.name.startswith(".tmp-"))


def test_nothing_is_an_entry_before_commit_and_a_wrong_copy_is_never_one(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"disk" * 1000)
    cache = BuildCache(tmp_path / "cache")
    pending = PendingEntry(cache, "k1")
    pending.add(disk.name, disk)
    assert cache.lookup("k1") is None  # copied, not committed
    with pytest.raises(OSError, match="not the build's sha256:00"):
        pending.commit({disk.name: "sha256:00"}, {})
    pending.discard()
    assert cache.lookup("k1") is None
    assert _leftovers(cache) == []
    pending = PendingEntry(cache, "k1")
    pending.add(disk.name, disk)
    pending.commit({disk.name: _sha(disk)}, {"created": "now"})
    pending.discard()  # after a commit: nothing left to remove, the entry stays
    entry = cache.lookup("k1")
    assert entry is not None
    assert entry.files[disk.name]["sha256"] == _sha(disk)
    assert _leftovers(cache) == []


def _context(tmp_path: Path) -> BuildContext:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    staging = tmp_path / "staging"
    staging.mkdir()
    ctx = staged_context(recipe, staging, tmp_path / "cache", BuildOptions())
    ctx.key = "f" * 64
    disk = staging / f"{ctx.basename}.qcow2"
    disk.write_bytes(b"q" * 4096)
    ctx.images = {disk.name: disk}
    ctx.digests = {disk.name: _sha(disk)}
    for name in METADATA_FILES:
        (staging / name).write_text("{}\n")
    return ctx


def test_the_store_step_commits_the_copy_made_alongside_the_audit(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    pipeline._start_cache_copy(ctx)
    assert ctx.cache_copy is not None
    pipeline.store_cache(ctx)
    entry = ctx.cache.lookup(ctx.key)
    assert entry is not None
    assert set(entry.files) == {*ctx.images, *METADATA_FILES}
    assert _leftovers(ctx.cache) == []


def test_a_disk_changed_after_its_digest_is_not_stored(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (disk,) = ctx.images.values()
    disk.write_bytes(b"changed after it was hashed")
    pipeline._start_cache_copy(ctx)
    pipeline.store_cache(ctx)  # the build stands; the cache refuses the copy
    assert ctx.cache.lookup(ctx.key) is None
    assert _leftovers(ctx.cache) == []


def test_a_failed_build_leaves_no_pending_entry(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    pipeline._start_cache_copy(ctx)
    pipeline._discard_cache_copy(ctx)
    assert ctx.cache_copy is None
    assert ctx.cache.lookup(ctx.key) is None
    assert _leftovers(ctx.cache) == []
