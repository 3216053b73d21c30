"""The build host's own configuration (trusted, unlike recipes).

Looked up in this order: ``--settings FILE``, ``$IMAGEFACTORY_SETTINGS``,
``/etc/imagefactory/settings.yaml`` (if it exists), built-in defaults.
Mirrors may also come from the environment (``IMAGEFACTORY_DEBIAN_MIRROR``,
``IMAGEFACTORY_DEBIAN_SECURITY_MIRROR``, ``IMAGEFACTORY_UBUNTU_MIRROR``), which
wins over the file; what is still unset is read from the host's apt sources,
then from diskimage-builder's own defaults (see :mod:`imagefactory.mirrors`).

Example::

    mirrors:
      debian: http://mirror.example.org/debian
      debian-security: http://mirror.example.org/debian-security
      ubuntu: http://mirror.example.org/ubuntu
    keyrings:
      ubuntu: /usr/share/keyrings/ubuntu-archive-keyring.gpg
    build:
      output_dir: images
      cache_dir: /var/cache/imagefactory
      cache_max_size: 10G    # builds and OS-tree layers; least recently used go first
      allow_scripts: false
      allowed_elements: [cloud-init, growroot]
      # Third-party apt repositories recipes may add (none by default): a URL
      # (or a prefix of it) and the key fingerprints it may be pinned to.
      allowed_repositories:
        - url_prefix: https://repo.example.org/cvmfs
          fingerprints: [0123456789ABCDEF0123456789ABCDEF01234567]
      # Keys for repositories a recipe pins by fingerprint alone (*.asc, *.gpg).
      repository_keys: /etc/imagefactory/repository-keys
      accel: auto            # auto | kvm | tcg
    gate:
      # The only programs 'imagefactory gate --' and 'run' start (absolute paths).
      hypervisors: [/usr/bin/qemu-system-x86_64, /usr/sbin/xl]
      # The packaged firmware a domain's <os><loader> may name (none by default).
      firmware: [/usr/share/OVMF/OVMF_CODE_4M.fd]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from imagefactory.errors import InputError, SettingsError
from imagefactory.fields import load_table
from imagefactory.fields.types import Choice, Field, Flag, ListOf, Struct, Text
from imagefactory.fields.values import SIZE_PATTERN, to_size
from imagefactory.fsutil import parse_size
from imagefactory.pgpkey import FINGERPRINT_PATTERN
from imagefactory.recipe import DEFAULT_ALLOWED_ELEMENTS, BuildLimits, RepositoryAllowance
from imagefactory.recipe.fields import ELEMENT_PATTERN
from imagefactory.recipe.rules import check_repository_url, fingerprint_hint, to_fingerprint
from imagefactory.vocab import Accel

SYSTEM_SETTINGS = Path("/etc/imagefactory/settings.yaml")
MIRROR_KEYS = ("debian", "debian-security", "ubuntu")
MIRROR_ENV = {
    "debian": "IMAGEFACTORY_DEBIAN_MIRROR",
    "debian-security": "IMAGEFACTORY_DEBIAN_SECURITY_MIRROR",
    "ubuntu": "IMAGEFACTORY_UBUNTU_MIRROR",
}
ACCEL_CHOICES = tuple(str(a) for a in Accel)
#: The hypervisor programs the boot gate runs unless the settings name others.
DEFAULT_HYPERVISORS = (
    Path("/usr/bin/qemu-system-x86_64"),
    Path("/usr/bin/qemu-system-i386"),
    Path("/usr/bin/qemu-system-aarch64"),
    Path("/usr/sbin/xl"),
)
#: The build cache's default size limit (``build.cache_max_size``): about a dozen
#: builds of a 4 GB worker-node disk (each entry takes what its disk holds).
DEFAULT_CACHE_MAX_SIZE_TEXT = "10G"
DEFAULT_CACHE_MAX_SIZE = parse_size(DEFAULT_CACHE_MAX_SIZE_TEXT)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).absolute() / "imagefactory"


@dataclass(frozen=True)
class Settings:
    """Validated host settings."""

    source: Path | None = None
    mirrors: Mapping[str, str] = field(default_factory=dict)
    keyrings: Mapping[str, Path] = field(default_factory=dict)
    output_dir: Path = Path("images")
    cache_dir: Path = field(default_factory=_default_cache_dir)
    #: Bytes the build cache's entries (builds and OS-tree layers) may take together.
    cache_max_size: int = DEFAULT_CACHE_MAX_SIZE
    allow_scripts: bool = False
    allowed_elements: frozenset[str] = DEFAULT_ALLOWED_ELEMENTS
    accel: str = "auto"
    #: The only programs ``imagefactory gate --`` and ``imagefactory run`` start.
    hypervisors: tuple[Path, ...] = DEFAULT_HYPERVISORS
    #: The host's packaged firmware files a gated domain may load (``<os><loader>``).
    firmware: tuple[Path, ...] = ()
    #: The site's recipe directories a recipe's ``extends`` may read from.
    include_roots: tuple[Path, ...] = ()
    #: Archive indexes known to be inconsistent (``SUITE/ARCH``); see SETTINGS.
    known_broken_archives: frozenset[str] = frozenset()
    #: The third-party apt repositories (URL prefix and key fingerprints) recipes may add.
    allowed_repositories: tuple[RepositoryAllowance, ...] = ()
    #: Where the keys of repositories pinned by fingerprint alone are kept.
    repository_keys: Path | None = None

    def build_limits(self, include_roots: tuple[Path, ...] = ()) -> BuildLimits:
        """The rules untrusted recipes are held to on this host.

        ``include_roots`` adds to the settings' ``build.include_roots``.
        """
        return BuildLimits(
            allow_scripts=self.allow_scripts,
            allowed_elements=self.allowed_elements,
            include_roots=(*self.include_roots, *include_roots),
            allowed_repositories=self.allowed_repositories,
        )

    @property
    def dib_image_cache(self) -> Path:
        """Where diskimage-builder keeps the debootstrap tarballs."""
        return self.cache_dir / "dib"

    @property
    def appliance_dir(self) -> Path:
        """Where the audit's libguestfs appliance is kept (:mod:`imagefactory.host.appliance`)."""
        return self.cache_dir / "appliance"


_URL = Text("an http(s) URL", pattern=r"^https?://[^\s]+$", max_length=2048)
_PATH = Text("a path", max_length=4096)
_ABSOLUTE = Text("an absolute path", pattern=r"^/[^\0]*$", max_length=4096)
_ALLOWED_REPOSITORY = Struct(
    expects="a mapping with url_prefix and fingerprints",
    fields=(
        Field(
            "url_prefix",
            Text("an http(s) URL", max_length=2048, check=check_repository_url),
            "A repository URL, or a prefix of it at a '/' (every repository under it).",
            required=True,
        ),
        Field(
            "fingerprints",
            ListOf(
                Text(
                    "a 40-hex-digit OpenPGP fingerprint",
                    pattern=FINGERPRINT_PATTERN,
                    convert=to_fingerprint,
                    suggest=fingerprint_hint,
                )
            ),
            "The key fingerprints a repository there may be pinned to.",
            required=True,
        ),
    ),
)

#: The settings file's field table (checked like recipes: every problem at
#: file:line:column, "did you mean" for misspelt keys).
SETTINGS = Struct(
    fields=(
        Field(
            "mirrors",
            Struct(
                fields=tuple(
                    Field(key, _URL, f"The {key} archive mirror (default: the host's apt sources).")
                    for key in MIRROR_KEYS
                )
            ),
            "Package archive mirrors.",
        ),
        Field(
            "keyrings",
            Struct(
                fields=(
                    Field("debian", _PATH, "Keyring that signs the Debian archive."),
                    Field("ubuntu", _PATH, "Keyring that signs the Ubuntu archive."),
                )
            ),
            "Archive keyrings debootstrap checks with.",
        ),
        Field(
            "build",
            Struct(
                fields=(
                    Field("output_dir", _PATH, "Where builds are published.", default="images"),
                    Field("cache_dir", _PATH, "Build, debootstrap and verdict caches."),
                    Field(
                        "cache_max_size",
                        Text("a size like '10G'", pattern=SIZE_PATTERN, convert=to_size),
                        "What the build cache's finished builds and OS-tree layers may take"
                        " together: after each build, and with `imagefactory cache prune`,"
                        " the least recently used go until they fit.",
                        default=DEFAULT_CACHE_MAX_SIZE_TEXT,
                    ),
                    Field(
                        "allow_scripts",
                        Flag(),
                        "Whether recipes may carry scripts (they run as root in the chroot).",
                        default=False,
                    ),
                    Field(
                        "allowed_elements",
                        ListOf(Text("an element name", pattern=ELEMENT_PATTERN, max_length=64)),
                        "The diskimage-builder elements recipes may add.",
                        default=sorted(DEFAULT_ALLOWED_ELEMENTS),
                    ),
                    Field(
                        "include_roots",
                        ListOf(_PATH),
                        "The site's recipe directories: a recipe's `extends` may name a"
                        " recipe in them (a VO recipe extending the site base), besides"
                        " its own directory.",
                    ),
                    Field(
                        "allowed_repositories",
                        ListOf(_ALLOWED_REPOSITORY, key="url_prefix"),
                        "The third-party apt repositories recipes may add, each a URL"
                        " (prefix) with the key fingerprints it may be pinned to. None by"
                        " default: a recipe's `repositories` entry is refused until the"
                        " site lists it.",
                    ),
                    Field(
                        "repository_keys",
                        _PATH,
                        "A directory of OpenPGP public keys (*.asc, *.gpg, one key each) for"
                        " recipe repositories pinned by fingerprint alone.",
                    ),
                    Field(
                        "accel",
                        Choice(Accel),
                        "qemu's accelerator: auto probes KVM and falls back to TCG.",
                        default="auto",
                    ),
                )
            ),
            "Build host limits and paths.",
        ),
        Field(
            "gate",
            Struct(
                fields=(
                    Field(
                        "hypervisors",
                        ListOf(_ABSOLUTE),
                        "The only programs the boot gate and `run` start.",
                        default=[str(h) for h in DEFAULT_HYPERVISORS],
                    ),
                    Field(
                        "firmware",
                        ListOf(_ABSOLUTE),
                        "The host's packaged firmware files a domain's <os><loader> may name.",
                        default=[],
                    ),
                )
            ),
            "The boot gate on a hypervisor host.",
        ),
        Field(
            "known_broken_archives",
            ListOf(
                Text(
                    "a suite and architecture like 'bookworm-security/i386'",
                    pattern=r"^[a-z0-9][a-z0-9.-]*/[a-z0-9]+$",
                    max_length=128,
                )
            ),
            "Archive indexes (SUITE/ARCH, the archive's architecture names) known to"
            " disagree with their signed InRelease. Builds still refuse them; the slow"
            " test set then skips the recipes that use them instead of failing.",
        ),
    )
)


def load_settings(path: Path | None = None) -> Settings:
    """Load the settings file that applies (see the module docstring)."""
    if path is None and os.environ.get("IMAGEFACTORY_SETTINGS"):
        path = Path(os.environ["IMAGEFACTORY_SETTINGS"])
    if path is None and SYSTEM_SETTINGS.exists():
        path = SYSTEM_SETTINGS
    if path is not None:
        path = path.absolute()
    settings = _from_file(path) if path is not None else Settings(output_dir=Path.cwd() / "images")
    env_mirrors = {k: os.environ[v] for k, v in MIRROR_ENV.items() if os.environ.get(v)}
    if env_mirrors:
        merged = dict(settings.mirrors)
        merged.update(_check_env_mirrors(env_mirrors))
        settings = replace(settings, mirrors=merged)
    return settings


def _from_file(path: Path) -> Settings:
    values = load_table(path, SETTINGS, SettingsError, empty_ok=True)
    # Relative paths in a settings file are relative to that file; the defaults
    # to the working directory. Either way they are made absolute here, once.
    here = path.parent
    mirrors, keyrings, build = values["mirrors"], values["keyrings"], values["build"]
    gate = values["gate"]
    return Settings(
        source=path,
        mirrors={k: str(v).rstrip("/") for k, v in mirrors.items() if v is not None},
        keyrings={k: here / str(v) for k, v in keyrings.items() if v is not None},
        output_dir=here / str(build["output_dir"]),
        cache_dir=here / str(build["cache_dir"]) if build["cache_dir"] else _default_cache_dir(),
        cache_max_size=int(build["cache_max_size"]),
        allow_scripts=bool(build["allow_scripts"]),
        allowed_elements=frozenset(build["allowed_elements"]),
        accel=str(build["accel"]),
        hypervisors=tuple(Path(str(h)) for h in gate["hypervisors"]),
        firmware=tuple(Path(str(f)) for f in gate["firmware"]),
        include_roots=tuple(here / str(root) for root in build["include_roots"]),
        known_broken_archives=frozenset(values["known_broken_archives"]),
        allowed_repositories=tuple(
            RepositoryAllowance(str(a["url_prefix"]), frozenset(a["fingerprints"]))
            for a in build["allowed_repositories"]
        ),
        repository_keys=here / str(build["repository_keys"]) if build["repository_keys"] else None,
    )


def _check_env_mirrors(mirrors: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in mirrors.items():
        url = value.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InputError(
                f"environment variable {MIRROR_ENV[key]}: expected an http(s) URL, got {url!r}"
            )
        out[key] = url
    return out
