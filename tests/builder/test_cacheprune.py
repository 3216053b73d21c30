"""The build cache's size limit: least recently used entries go first, the build's own stay."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.cache import BuildCache, CacheEntryChanged, file_digest
from imagefactory.builder.cacheprune import LEFTOVER_AGE, allocated, prune, scan
from imagefactory.builder.context import BuildOptions
from imagefactory.cli import main
from imagefactory.errors import EXIT_ERROR, EXIT_OK, SettingsError
from imagefactory.recipe import load_recipe
from imagefactory.settings import DEFAULT_CACHE_MAX_SIZE, load_settings
from tests.builder.contexts import staged_context
from tests.conftest import RECIPES

MIB = 1024 * 1024


def _entry(cache_dir: Path, kind: str, key: str, size_mib: int, used: float) -> Path:
    """A stored entry of ``size_mib`` MiB whose last use was ``used``."""
    cache = BuildCache(cache_dir, kind)
    src = Path(tempfile.mkdtemp(dir=cache_dir.parent)) / "disk.qcow2"
    src.write_bytes(b"x" * (size_mib * MIB))
    record = {"image": {"name": f"wn-{key}", "version": "1.0"}, "created": "then"}
    cache.store(key, {src.name: src}, {src.name: file_digest(src)}, record)
    src.unlink()
    os.utime(cache.root / key, (used, used))
    return cache.root / key


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


def test_the_least_recently_used_go_first_across_builds_and_layers(cache_dir: Path) -> None:
    now = time.time()
    oldest = _entry(cache_dir, "builds", "a", 2, now - 400)
    layer = _entry(cache_dir, "layers", "b", 2, now - 300)
    recent = _entry(cache_dir, "builds", "c", 2, now - 200)
    newest = _entry(cache_dir, "layers", "d", 2, now - 100)
    assert [item.key for item in scan(cache_dir)] == ["a", "b", "c", "d"]
    each = allocated(oldest)
    assert each >= 2 * MIB

    done = prune(cache_dir, limit=2 * each + each // 2)

    assert [(item.kind, item.key) for item in done.removed] == [("builds", "a"), ("layers", "b")]
    assert done.freed == 2 * each
    assert not oldest.exists()
    assert not layer.exists()
    assert recent.is_dir()
    assert newest.is_dir()
    assert done.kept_bytes <= done.limit
    # What is left is whole: it is still served.
    assert BuildCache(cache_dir).lookup("c") is not None
    assert not [p for p in (cache_dir / "builds").iterdir() if p.name.startswith(".")]


def test_under_the_limit_nothing_goes(cache_dir: Path) -> None:
    _entry(cache_dir, "builds", "a", 1, time.time())
    done = prune(cache_dir, limit=DEFAULT_CACHE_MAX_SIZE)
    assert done.removed == []
    assert [item.key for item in done.kept] == ["a"]


def test_the_builds_own_entries_stay_even_over_the_limit(cache_dir: Path) -> None:
    now = time.time()
    _entry(cache_dir, "builds", "mine", 2, now - 500)
    _entry(cache_dir, "layers", "my-layer", 2, now - 400)
    _entry(cache_dir, "builds", "other", 2, now - 100)
    done = prune(cache_dir, limit=1, keep={"mine", "my-layer"})
    assert [item.key for item in done.removed] == ["other"]
    assert sorted(item.key for item in done.kept) == ["mine", "my-layer"]


def test_a_dry_run_removes_nothing(cache_dir: Path) -> None:
    path = _entry(cache_dir, "builds", "a", 1, time.time())
    done = prune(cache_dir, limit=0, dry_run=True)
    assert [item.key for item in done.removed] == ["a"]
    assert path.is_dir()


def test_a_hit_renews_an_entrys_last_use(cache_dir: Path) -> None:
    now = time.time()
    _entry(cache_dir, "builds", "old-but-used", 1, now - 1000)
    _entry(cache_dir, "builds", "newer-unused", 1, now - 500)
    assert BuildCache(cache_dir).lookup("old-but-used") is not None
    done = prune(cache_dir, limit=allocated(cache_dir / "builds" / "newer-unused"))
    assert [item.key for item in done.removed] == ["newer-unused"]


def test_an_entry_pruned_while_it_is_copied_out_is_a_miss_not_a_half_copy(
    cache_dir: Path, tmp_path: Path
) -> None:
    _entry(cache_dir, "builds", "a", 1, time.time())
    entry = BuildCache(cache_dir).lookup("a")
    assert entry is not None
    prune(cache_dir, limit=0)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CacheEntryChanged):
        entry.materialize(out)


def test_interrupted_builds_left_overs_go_once_a_day_old(cache_dir: Path) -> None:
    root = cache_dir / "builds"
    root.mkdir()
    old_tmp = root / ".tmp-aaaaaaaaaaaa-x1"
    old_evicted = root / ".evicted-bbbb-123"
    fresh = root / ".tmp-cccccccccccc-x2"
    for path in (old_tmp, old_evicted, fresh):
        path.mkdir()
        (path / "disk.qcow2").write_bytes(b"x" * 4096)
    then = time.time() - LEFTOVER_AGE - 60
    for path in (old_tmp, old_evicted):
        os.utime(path, (then, then))
    done = prune(cache_dir, limit=DEFAULT_CACHE_MAX_SIZE)
    assert sorted(done.leftovers) == sorted([old_tmp, old_evicted])
    assert not old_tmp.exists()
    assert not old_evicted.exists()
    assert fresh.is_dir()  # a build may be writing it now


def test_the_pipelines_prune_step_keeps_the_build_and_its_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "tool_versions", lambda *_: {"diskimage-builder": "3.43"})
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    staging = tmp_path / "staging"
    staging.mkdir()
    ctx = staged_context(recipe, staging, cache_dir, BuildOptions())
    pipeline.lookup_cache(ctx)
    now = time.time()
    _entry(cache_dir, "builds", ctx.key, 2, now - 900)
    _entry(cache_dir, "layers", "its-layer", 2, now - 800)
    _entry(cache_dir, "builds", "someone-else", 2, now - 100)
    ctx.layer = {"key": "its-layer", "used": True, "hit": True}
    ctx.settings = dataclasses.replace(ctx.settings, cache_max_size=3 * MIB)
    pipeline.prune_cache(ctx)
    assert sorted(item.key for item in scan(cache_dir)) == sorted([ctx.key, "its-layer"])
    stream = ctx.progress.stream
    assert isinstance(stream, io.StringIO)
    assert "cache: removed 1 least recently used entries" in stream.getvalue()


def test_settings_take_a_size_and_name_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("build:\n  cache_max_size: 40G\n")
    assert load_settings(good).cache_max_size == 40 * 1024**3
    bad = tmp_path / "bad.yaml"
    bad.write_text("build:\n  cache_max_size: 40 GB\n")
    with pytest.raises(SettingsError) as info:
        load_settings(bad)
    assert f"{bad}:2:" in info.value.render()
    assert ".build.cache_max_size: expected a size like '10G', found '40 GB'" in info.value.render()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cache_list_and_prune_on_the_command_line(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    _entry(cache_dir, "builds", "a" * 64, 1, now - 100)
    _entry(cache_dir, "layers", "b" * 64, 1, now)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"build:\n  cache_dir: {cache_dir}\n  cache_max_size: 1K\n")

    code, out, _ = _cli(capsys, "--json", "--settings", str(settings), "cache", "list")
    listed = json.loads(out)
    assert code == EXIT_OK
    assert [e["kind"] for e in listed["entries"]] == ["builds", "layers"]
    assert listed["entries"][0]["label"] == f"wn-{'a' * 64} 1.0"
    assert listed["limit_bytes"] == 1024

    code, out, _ = _cli(capsys, "--settings", str(settings), "cache", "prune", "--dry-run")
    assert code == EXIT_OK
    assert "would remove 2 entries" in out
    assert len(scan(cache_dir)) == 2

    code, out, _ = _cli(
        capsys, "--json", "--settings", str(settings), "cache", "prune", "--max-size", "2M"
    )
    done = json.loads(out)
    assert code == EXIT_OK
    assert [e["key"] for e in done["removed"]] == ["a" * 64]
    assert [item.key for item in scan(cache_dir)] == ["b" * 64]


def test_a_bad_max_size_is_a_usage_error_without_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _cli(capsys, "cache", "prune", "--max-size", "lots")
    assert code == EXIT_ERROR  # bad usage: no answer (the exit code table)
    assert "--max-size: expected a size like '2G'" in err
    assert "Traceback" not in err
