"""Fixtures for the integration tests: real diskimage-builder builds, real
qemu boots. They need root and the host packages (scripts/setup installs them).

Each test session builds into its own output and build cache, so what is
tested is a real build, never a result cached by an earlier run. The
debootstrap tarball cache (``<cache>/dib``) is shared with the host's normal
cache: it is an input cache DIB refreshes with a dist-upgrade on every build.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from imagefactory.build.pipeline import BuildOptions, BuildResult, build
from imagefactory.errors import ArchiveError
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import Settings, load_settings
from tests.conftest import RECIPES, require_integration_host

EXAMPLE = RECIPES / "atlas-wn-debian12.yaml"

Builder = Callable[..., BuildResult]


@pytest.fixture(scope="session")
def build_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Host settings with a fresh build cache and the shared debootstrap cache."""
    require_integration_host()
    host = load_settings(None)
    cache = tmp_path_factory.mktemp("cache")
    host.dib_image_cache.mkdir(parents=True, exist_ok=True)
    (cache / "dib").symlink_to(host.dib_image_cache)
    return dataclasses.replace(host, cache_dir=cache)


@pytest.fixture(scope="session")
def build_recipe(build_settings: Settings) -> Builder:
    """Build a recipe through the real pipeline; progress goes to a buffer."""

    def _build(
        recipe_path: Path, output: Path, *, boot_test: bool = True, use_cache: bool = True
    ) -> BuildResult:
        recipe = load_recipe(recipe_path, build_settings.build_policy())
        options = BuildOptions(use_cache=use_cache, boot_test=boot_test, boot_timeout=600.0)
        try:
            return build(recipe, build_settings, options, Progress(stream=io.StringIO()), output)
        except ArchiveError as exc:
            # The mirror is the outside world: when it is caught mid-sync the
            # build is refused up front (see imagefactory.mirrors.check_indexes)
            # and there is nothing to test until it is consistent again.
            pytest.skip(f"package archive inconsistent, nothing to build: {exc}")

    return _build


@pytest.fixture(scope="session")
def example_build(build_recipe: Builder, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The example recipe, built and boot-tested once per test session."""
    return build_recipe(EXAMPLE, tmp_path_factory.mktemp("images"))
