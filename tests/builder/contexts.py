"""A build context as the pipeline holds it after its archive and element steps.

For the builder's unit tests that run single steps (``lookup_cache``, the
layer's key, a cache hit) without the steps before them.
"""

from __future__ import annotations

import io
from pathlib import Path

from imagefactory.aptrepo import VerifiedRepository
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.mirrors import BaseArchive
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe
from imagefactory.settings import Settings
from imagefactory.vocab import Distro

ARCHIVE = BaseArchive(Distro.DEBIAN, "bookworm", "http://m.test/debian", None, "settings")


def staged_context(
    recipe: Recipe,
    staging: Path,
    cache_dir: Path,
    options: BuildOptions,
    *,
    fingerprint: dict[str, str] | None = None,
    repositories: list[VerifiedRepository] | None = None,
) -> BuildContext:
    """``recipe``'s context in ``staging``: archive, fingerprint, repositories and element set."""
    ctx = BuildContext(
        recipe=recipe,
        settings=Settings(cache_dir=cache_dir),
        options=options,
        progress=Progress(stream=io.StringIO()),
        staging=staging,
        logfile=io.StringIO(),
    )
    ctx.archive = ARCHIVE
    ctx.fingerprint = fingerprint if fingerprint is not None else {"bookworm": "sha256:aa"}
    ctx.repositories = repositories or []
    keys = {r.repository.name: r.key.binary for r in ctx.repositories}
    ctx.element = write_element(recipe, staging / "elements", repository_keys=keys)
    return ctx
