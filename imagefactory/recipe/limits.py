"""The build host's rules for untrusted recipes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: diskimage-builder elements a recipe may add when the host does not say otherwise:
#: small, well-known elements that configure the guest and run nothing on the host.
DEFAULT_ALLOWED_ELEMENTS: frozenset[str] = frozenset(
    {
        "cloud-init",
        "cloud-init-datasources",
        "enable-serial-console",
        "journal-to-console",
        "growroot",
        "openssh-server",
        "runtime-ssh-host-keys",
        "sysctl",
        "modprobe",
    }
)


@dataclass(frozen=True)
class RepositoryAllowance:
    """One entry of the host's ``build.allowed_repositories``.

    A recipe's repository is allowed when its URL is ``url_prefix`` or lies
    under it (``url_prefix`` + ``/...``) and its pinned key is one of
    ``fingerprints``.
    """

    url_prefix: str
    fingerprints: frozenset[str]

    def covers(self, url: str) -> bool:
        prefix = self.url_prefix.rstrip("/")
        return url.rstrip("/") == prefix or url.startswith(prefix + "/")


@dataclass(frozen=True)
class BuildLimits:
    """What the build host lets a recipe do.

    Recipes are untrusted input to a build that runs as root, so everything a
    recipe could use to run code or read host files is off unless the host
    turns it on here.
    """

    #: Whether recipes may carry shell scripts (they run as root in the image chroot).
    allow_scripts: bool = False
    #: The extra diskimage-builder elements recipes may ask for.
    allowed_elements: frozenset[str] = DEFAULT_ALLOWED_ELEMENTS
    #: Directories besides the top-level recipe's own that ``extends`` may read from.
    include_roots: tuple[Path, ...] = ()
    #: The third-party apt repositories recipes may add (none unless the host lists them).
    allowed_repositories: tuple[RepositoryAllowance, ...] = ()


DEFAULT_LIMITS = BuildLimits()
