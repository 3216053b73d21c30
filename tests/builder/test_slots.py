"""Concurrent builds get separate diskimage-builder caches; sequential ones share slot 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.builder.slots import cache_slot
from imagefactory.errors import BuildError


def test_sequential_builds_reuse_the_cache_itself(tmp_path: Path) -> None:
    with cache_slot(tmp_path / "dib") as first:
        pass
    with cache_slot(tmp_path / "dib") as second:
        pass
    assert first == second == tmp_path / "dib"


def test_concurrent_builds_get_separate_slots(tmp_path: Path) -> None:
    root = tmp_path / "dib"
    with cache_slot(root) as a, cache_slot(root) as b, cache_slot(root) as c:
        assert [a, b, c] == [root, root / "slot-1", root / "slot-2"]
        assert b.is_dir()
    with cache_slot(root) as again:  # all released: back to the warm slot 0
        assert again == root


def test_when_every_slot_is_taken_the_error_says_so(tmp_path: Path) -> None:
    root = tmp_path / "dib"
    with cache_slot(root, max_slots=1):
        taken = cache_slot(root, max_slots=1)
        with pytest.raises(BuildError, match="1 builds already"):
            taken.__enter__()
