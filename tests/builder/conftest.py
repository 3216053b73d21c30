"""The builder's tests: no mount a step made (DIB's tmpfs output directory, the
mounted tree) outlives its test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.builder.cleanup import mounts_below, unmount_below


@pytest.fixture(autouse=True)
def _no_mount_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mounts_below(tmp_path)
    unmount_below(tmp_path)
    assert not [p for p in left if p.name not in ("dib-out", "tree")], left
