"""The one small object every build step takes: the recipe, the host's settings,
the options, and what earlier steps found (a flat list of steps in
:mod:`imagefactory.builder.pipeline`, each filling in its part)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from imagefactory.aptrepo import VerifiedRepository
from imagefactory.audit import AuditReport
from imagefactory.boot.qemu import DEFAULT_TIMEOUT
from imagefactory.builder.assemble import PreparedTree
from imagefactory.builder.background import Background
from imagefactory.builder.bootjob import BootJob
from imagefactory.builder.cache import BuildCache, CacheEntry, PendingEntry
from imagefactory.builder.element import GeneratedElement
from imagefactory.digest import hash_file
from imagefactory.errors import BuildError
from imagefactory.mirrors import BaseArchive
from imagefactory.profiles import Profile
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe
from imagefactory.sbom import OriginSource
from imagefactory.settings import Settings


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked for on the command line."""

    use_cache: bool = True
    #: Start from the cached OS-tree layer of the recipes it extends (``--no-layer-cache``: no).
    use_layer: bool = True
    boot_test: bool = False
    boot_timeout: float = DEFAULT_TIMEOUT
    replace: bool = False
    verbose: bool = False


@dataclass
class BuildContext:
    """Everything the steps share; each step fills in its part."""

    recipe: Recipe
    settings: Settings
    options: BuildOptions
    progress: Progress
    staging: Path
    logfile: IO[str]
    archive: BaseArchive | None = None
    #: Every suite's ``InRelease``, by (mirror, suite), as the ``archive`` step fetched it.
    releases: dict[tuple[str, str], bytes] = field(default_factory=dict)
    fingerprint: dict[str, str] = field(default_factory=dict)
    #: The recipe's third-party repositories, verified against their pinned keys.
    repositories: list[VerifiedRepository] = field(default_factory=list)
    #: The verified indexes of the archive and of each repository: the SBOM's origins.
    origin_sources: list[OriginSource] = field(default_factory=list)
    element: GeneratedElement | None = None
    versions: dict[str, str] = field(default_factory=dict)
    key: str = ""
    key_inputs: dict[str, Any] = field(default_factory=dict)
    hit: CacheEntry | None = None
    #: The OS-tree layer this build started from (``used``, ``key``, ``hit``, ...),
    #: or why none (``used: false``, ``reason``); ``None`` until the layer step.
    layer: dict[str, Any] | None = None
    #: The cached layer's file, open and checked, between the ``layer`` and ``dib``
    #: steps: DIB's extract hook reads it through ``/proc/<pid>/fd/<fd>``.
    layer_fd: int | None = None
    #: The finished OS tree between the ``tree`` and ``assemble`` steps (hardened in between).
    tree: PreparedTree | None = None
    images: dict[str, Path] = field(default_factory=dict)  # file name -> path
    digests: dict[str, str] = field(default_factory=dict)  # file name -> sha256:...
    #: The images' digests being computed (file name -> algorithm -> hex), see
    #: :meth:`start_digests`; the primary image's sha512 is the labels'.
    digest_job: Background[dict[str, dict[str, str]]] | None = None
    #: The cache entry the images are being copied into alongside the audit
    #: (committed by the ``store`` step, discarded if the build fails).
    cache_copy: tuple[PendingEntry, Background[None]] | None = None
    disk: dict[str, Any] = field(default_factory=dict)
    packages: list[dict[str, str]] = field(default_factory=list)
    boot: dict[str, Any] | None = None
    #: The boot test running alongside the audit and label steps (``--boot-test``).
    boot_job: BootJob | None = None
    profile: Profile | None = None
    hardening: dict[str, Any] = field(default_factory=dict)
    audit: AuditReport | None = None
    #: What the audit step read from the image (facts for the labels).
    observed: dict[str, Any] = field(default_factory=dict)
    #: When this build started (UTC): the image's creation time unless the cache had it.
    started: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0)
    )

    def start_digests(self) -> None:
        """Start hashing the images: sha256 of each, and sha512 of the primary one."""
        images = dict(self.images)
        primary = self.primary_image

        def work() -> dict[str, dict[str, str]]:
            return {
                name: hash_file(
                    path, ("sha256", "sha512") if name == primary else ("sha256",)
                ).hexdigests
                for name, path in images.items()
            }

        self.digest_job = Background("imagefactory-digests", work)

    def image_digests(self) -> dict[str, dict[str, str]]:
        """The images' digests (waits for :meth:`start_digests`); fills :attr:`digests`."""
        if self.digest_job is None:
            raise BuildError("internal error: the assemble step has not hashed the images")
        try:
            sums = self.digest_job.result()
        except OSError as exc:
            raise BuildError(f"cannot hash the images: {exc}") from exc
        self.digests = {name: f"sha256:{hexes['sha256']}" for name, hexes in sums.items()}
        return sums

    @property
    def basename(self) -> str:
        return f"{self.recipe.name}-{self.recipe.version}"

    @property
    def primary_image(self) -> str:
        """The file name of the image in the recipe's first format (the labels' disk)."""
        return f"{self.basename}.{self.recipe.disk.formats[0]}"

    def need_archive(self) -> BaseArchive:
        """The resolved archive; a step that runs before ``archive`` is a bug."""
        if self.archive is None:
            raise BuildError("internal error: the archive step has not run")
        return self.archive

    def need_element(self) -> GeneratedElement:
        """The generated element; a step that runs before ``element`` is a bug."""
        if self.element is None:
            raise BuildError("internal error: the element step has not run")
        return self.element

    def need_profile(self) -> Profile:
        """The hardening profile; loaded by the ``cache`` step."""
        if self.profile is None:
            raise BuildError("internal error: the hardening profile is not loaded")
        return self.profile

    @property
    def cache(self) -> BuildCache:
        return BuildCache(self.settings.cache_dir)
