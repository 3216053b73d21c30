"""Session fixture: a real image built by this test session through the real pipeline.

``built_image`` builds ``recipes/site-base-debian12.yaml`` with
:func:`imagefactory.build.pipeline.build` (so it is hardened, audited and
labelled) into a temporary output directory, using the normal build cache:
a repeated run is a cache hit (the audit and labels still run on the disk).
Imported by ``tests/conftest.py``; needs root and the host tools (under CI a
missing prerequisite fails instead of skipping).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest

from imagefactory.build.pipeline import BuildOptions, BuildResult, build
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
BUILT_RECIPE = REPO / "recipes" / "site-base-debian12.yaml"
TOOLS = ("debootstrap", "qemu-img", "sfdisk", "mkfs.ext4", "disk-image-create")


def _require(condition: bool, reason: str) -> None:
    from tests.conftest import require_or_skip

    require_or_skip(condition, reason)


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The published build of site-base-debian12 (directory, record, cache_hit)."""
    _require(os.geteuid() == 0, "building an image needs root (DIB's chroot)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    venv_bin = str(Path(sys.executable).parent)
    for tool in TOOLS:
        _require(shutil.which(tool, path=f"{venv_bin}:{path}") is not None, f"{tool} is missing")
    try:
        import guestfs  # noqa: F401
    except ImportError:
        _require(False, "the libguestfs Python binding (python3-guestfs) is missing")
    settings = load_settings()
    recipe = load_recipe(BUILT_RECIPE, settings.build_policy())
    output = tmp_path_factory.mktemp("images")
    return build(
        recipe, settings, BuildOptions(), Progress(stream=io.StringIO()), output_root=output
    )
