"""Session fixtures that build real images through the real pipeline.

Each test session builds into its own output directory and its own build
cache, so what the integration tests check is a real build, never a result
cached by an earlier run. The debootstrap tarball cache (``<cache>/dib``) is
shared with the host's normal cache: it is an input cache that
diskimage-builder refreshes with a dist-upgrade on every build.

Registered by ``tests/integration/conftest.py`` (unit tests never load them).
They need root and the host tools; under CI (CI=true) a missing prerequisite
fails instead of skipping.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from imagefactory import mirrors
from imagefactory.builder import pipeline
from imagefactory.builder.context import BuildOptions
from imagefactory.builder.pipeline import BuildResult, build
from imagefactory.errors import ArchiveError, InconsistentArchiveError
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
#: The example recipe: an ATLAS worker node extending the site's Debian 12 base.
EXAMPLE = REPO / "recipes" / "atlas-wn-debian12.yaml"

Builder = Callable[..., BuildResult]


def _require_build_host() -> None:
    from tests.conftest import require_integration_host, require_or_skip

    require_integration_host()
    try:
        import guestfs  # noqa: F401
    except ImportError:
        require_or_skip(False, "the libguestfs Python binding (python3-guestfs) is missing")


@pytest.fixture(scope="session")
def frozen_archive() -> Iterator[None]:
    """The archive fingerprint (InRelease digests) as first seen in this session.

    The cache key covers it (an archive update rebuilds; tests/builder checks
    that), so a mirror publishing an update while the suite runs would turn
    the cache tests' hits into misses. Only the fingerprint is pinned: the
    builds install from the live mirror and its consistency is checked live.
    """
    first: dict[str, str] = {}
    live = mirrors.release_fingerprint

    def pinned(releases: Mapping[tuple[str, str], bytes]) -> dict[str, str]:
        return {suite: first.setdefault(suite, digest) for suite, digest in live(releases).items()}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "release_fingerprint", pinned)
        yield


@pytest.fixture(scope="session")
def build_settings(tmp_path_factory: pytest.TempPathFactory, frozen_archive: None) -> Settings:
    """Host settings with a fresh build cache and the shared debootstrap cache."""
    _require_build_host()
    host = load_settings(None)
    cache = tmp_path_factory.mktemp("cache")
    host.dib_image_cache.mkdir(parents=True, exist_ok=True)
    (cache / "dib").symlink_to(host.dib_image_cache)
    return dataclasses.replace(host, cache_dir=cache)


@pytest.fixture(scope="session")
def build_recipe(build_settings: Settings) -> Builder:
    """Build a recipe through the real pipeline; progress goes to a buffer.

    Full builds unless ``use_layer``: each recipe's test builds what it names,
    and a layer would add a diskimage-builder run of its own to every recipe
    of the matrix (tests/integration/test_layered_build.py builds one).
    """

    def _build(
        recipe_path: Path,
        output: Path,
        *,
        boot_test: bool = True,
        use_cache: bool = True,
        use_layer: bool = False,
    ) -> BuildResult:
        recipe = load_recipe(recipe_path, build_settings.build_limits())
        options = BuildOptions(
            use_cache=use_cache, boot_test=boot_test, boot_timeout=600.0, use_layer=use_layer
        )
        try:
            return build(recipe, build_settings, options, Progress(stream=io.StringIO()), output)
        except ArchiveError as exc:
            archive_refused(exc, build_settings)
            raise

    return _build


def archive_refused(exc: ArchiveError, settings: Settings) -> None:
    """A build the archive refused: fail in CI, skip locally or when known broken.

    The mirror is the outside world: caught mid-sync, the build is refused up
    front (imagefactory.mirrors.check_indexes) with the failing index named.
    CI must not pass silently over a flavour it did not build, so it fails
    with that message, unless the host's settings list every failing index
    under ``known_broken_archives``.
    """
    from tests.conftest import require_or_skip

    if isinstance(exc, InconsistentArchiveError) and set(exc.suites) <= set(
        settings.known_broken_archives
    ):
        pytest.skip(
            f"archive known broken (settings known_broken_archives: {', '.join(exc.suites)}):"
            f" {exc.render()}"
        )
    require_or_skip(False, f"the package archive refused the build: {exc.render()}")


@pytest.fixture(scope="session")
def example_build(build_recipe: Builder, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The example recipe, built, hardened, labelled and boot-tested once per session.

    A full build (no OS-tree layer): what the layered build is compared with.

    Built as the README's main job builds it: relative recipe and output paths,
    from a working directory that is neither the repository nor the output
    (a relative path handed on to diskimage-builder broke the main job once
    while every test passed). The result's paths are absolute.
    """
    workdir = tmp_path_factory.mktemp("cwd")
    output = tmp_path_factory.mktemp("images")
    before = Path.cwd()
    os.chdir(workdir)
    try:
        result = build_recipe(
            Path(os.path.relpath(EXAMPLE, workdir)), Path(os.path.relpath(output, workdir))
        )
    finally:
        os.chdir(before)
    assert result.directory.is_absolute()
    assert result.directory.resolve().is_relative_to(output.resolve())
    return result


@pytest.fixture(scope="session")
def built_image(example_build: BuildResult) -> BuildResult:
    """A real built image for the stages after the build (the example's)."""
    return example_build
