"""Superseded OS-tree layers are removed when a new layer of the same plan is built."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagefactory.builder.cache import BuildCache
from imagefactory.builder.layer import LAYER_KIND
from imagefactory.builder.layer_steps import prune_layers

PLAN = {"base": {"distro": "debian", "release": "bookworm"}, "packages": ("chrony", "rsyslog")}
OTHER = {"base": {"distro": "debian", "release": "bookworm"}, "packages": ("chrony",)}


def _store(cache: BuildCache, tmp_path: Path, key: str, plan: object, created: str) -> None:
    tar = tmp_path / f"{key}.tar.gz"
    tar.write_bytes(key.encode())
    digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    cache.store(key, {"layer.tar.zst": tar}, {"layer.tar.zst": digest},
                {"plan": plan, "created": created})  # fmt: skip


def test_only_the_newest_layers_of_a_plan_are_kept(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache", LAYER_KIND)
    _store(cache, tmp_path, "a1", PLAN, "2026-11-01T00:00:00Z")
    _store(cache, tmp_path, "a3", PLAN, "2026-11-03T00:00:00Z")
    _store(cache, tmp_path, "a2", PLAN, "2026-11-02T00:00:00Z")
    _store(cache, tmp_path, "b1", OTHER, "2026-10-01T00:00:00Z")
    assert prune_layers(cache, "a4", PLAN) == ["a1", "a2"]
    assert sorted(cache.records()) == ["a3", "b1"]  # the newest old one, and another plan
    assert prune_layers(cache, "a4", PLAN, keep=1) == ["a3"]
    assert sorted(cache.records()) == ["b1"]
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]


def test_the_layer_being_stored_is_never_removed(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache", LAYER_KIND)
    _store(cache, tmp_path, "a1", PLAN, "2026-11-01T00:00:00Z")
    assert prune_layers(cache, "a1", PLAN, keep=1) == []
    assert sorted(cache.records()) == ["a1"]
