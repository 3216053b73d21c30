"""Which package archive a build uses, and how fresh that archive is.

imagefactory never names a mirror host itself. For each distribution the
mirror comes from, in order:

1. the settings (``mirrors:``) or the environment (``IMAGEFACTORY_*_MIRROR``);
2. the build host's own apt sources (``/etc/apt/sources.list`` and
   ``/etc/apt/sources.list.d/*.list|*.sources``): an entry whose suite is a
   known release of that distribution;
3. diskimage-builder's own default, read from its element's environment file.

The archive's ``InRelease`` files are fetched to fingerprint the base: when the
archive publishes updates (a security fix), the build cache key changes and
the next build rebuilds instead of serving a stale image. The same files say
how large each package index is; a mirror that serves an index of another size
(caught mid-sync) would make apt fail deep inside the build, so
:func:`check_indexes` compares them up front and names the mirror and file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from imagefactory.errors import ArchiveError, HostError, InconsistentArchiveError
from imagefactory.run import output_of
from imagefactory.vocab import Arch, Distro

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
#: InRelease files are a few hundred KiB; refuse anything absurd.
MAX_RELEASE_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 30.0


@dataclass(frozen=True)
class AptEntry:
    """One ``deb`` line (or one URI x suite of a deb822 stanza)."""

    uri: str
    suite: str


@dataclass(frozen=True)
class BaseArchive:
    """The archive a build installs from."""

    distro: Distro
    release: str
    mirror: str
    security_mirror: str | None
    origin: str  # where the mirror setting came from, for build.json and --verbose

    def suites(self) -> list[tuple[str, str]]:
        """(mirror, suite) pairs apt in the image will use."""
        if self.distro is Distro.DEBIAN:
            pairs = [(self.mirror, self.release), (self.mirror, f"{self.release}-updates")]
            if self.security_mirror:
                pairs.append((self.security_mirror, f"{self.release}-security"))
            return pairs
        return [
            (self.mirror, self.release),
            (self.mirror, f"{self.release}-updates"),
            (self.mirror, f"{self.release}-security"),
        ]

    def dib_env(self) -> dict[str, str]:
        """diskimage-builder variables selecting this archive."""
        env = {"DIB_DISTRIBUTION_MIRROR": self.mirror}
        if self.distro is Distro.DEBIAN and self.security_mirror:
            env["DIB_DEBIAN_SECURITY_MIRROR"] = self.security_mirror
        if self.distro is Distro.UBUNTU:
            # Leave out backports: a worker node takes released packages only.
            env["DIB_UBUNTU_MIRROR_DISTS"] = "updates,security"
        return env


def parse_apt_sources(texts: Iterable[tuple[str, str]]) -> list[AptEntry]:
    """Parse apt source files given as (file name, text) pairs.

    Both the one-line format (``*.list``) and deb822 (``*.sources``) are
    understood; only ``deb`` entries over http(s) are returned.
    """
    entries: list[AptEntry] = []
    for name, text in texts:
        if name.endswith(".sources"):
            entries += _parse_deb822(text)
        else:
            entries += _parse_one_line(text)
    return [e for e in entries if e.uri.startswith(("http://", "https://"))]


def _parse_one_line(text: str) -> list[AptEntry]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [arch=... signed-by=...]
        fields = line.split()
        if len(fields) >= 3:
            out.append(AptEntry(uri=fields[1].rstrip("/"), suite=fields[2]))
    return out


def _parse_deb822(text: str) -> list[AptEntry]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptEntry(uri=uri.rstrip("/"), suite=suite))
    return out


def host_apt_entries() -> list[AptEntry]:
    """The build host's configured apt sources."""
    files: list[Path] = []
    if APT_SOURCES.is_file():
        files.append(APT_SOURCES)
    if APT_SOURCES_DIR.is_dir():
        files += sorted(p for p in APT_SOURCES_DIR.iterdir() if p.suffix in (".list", ".sources"))
    texts = []
    for path in files:
        try:
            texts.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return parse_apt_sources(texts)


def mirror_from_apt(entries: Iterable[AptEntry], distro: Distro) -> tuple[str | None, str | None]:
    """(archive mirror, security mirror) for ``distro`` from apt entries.

    An entry counts for a distribution when its suite is one of that
    distribution's known codenames, optionally with ``-updates``/``-security``.
    """
    codenames = {release.codename for release in distro.releases}
    mirror = security = None
    for entry in entries:
        base, _, pocket = entry.suite.partition("-")
        if base not in codenames:
            continue
        if pocket == "security":
            security = security or entry.uri
        elif pocket in ("", "updates"):
            mirror = mirror or entry.uri
    return mirror, security


def dib_default_mirror(distro: Distro, arch: Arch, release: str) -> tuple[str, str | None]:
    """diskimage-builder's own default mirror, evaluated from its element files."""
    spec = importlib.util.find_spec("diskimage_builder")
    if spec is None or spec.origin is None:
        raise HostError(
            "diskimage-builder is not installed in this environment",
            hint="run scripts/setup, or pip install diskimage-builder",
        )
    elements = Path(spec.origin).parent / "elements"
    if distro is Distro.DEBIAN:
        files = sorted((elements / "debian-minimal" / "environment.d").glob("*.bash"))
        query = 'printf "%s\\n%s" "$DIB_DISTRIBUTION_MIRROR" "$DIB_DEBIAN_SECURITY_MIRROR"'
    else:
        files = sorted((elements / "ubuntu-common" / "environment.d").glob("*.bash"))
        query = 'printf "%s\\n" "$DIB_DISTRIBUTION_MIRROR"'
    script = "".join(f'. "{f}" >/dev/null\n' for f in files) + query
    out = output_of(
        ["bash", "-c", script],
        env={"ARCH": arch.dib_arch, "DIB_RELEASE": release},
    ).splitlines()
    mirror = out[0].rstrip("/") if out and out[0] else ""
    if not mirror:
        raise HostError(f"could not determine diskimage-builder's default {distro} mirror")
    security = out[1].rstrip("/") if len(out) > 1 and out[1] else None
    return mirror, security


def resolve_archive(
    distro: Distro,
    release: str,
    arch: Arch,
    configured: Mapping[str, str],
    apt_entries: Iterable[AptEntry] | None = None,
) -> BaseArchive:
    """Pick the archive for a build (see the module docstring for the order)."""
    key = str(distro)
    mirror = configured.get(key)
    security = configured.get("debian-security") if distro is Distro.DEBIAN else None
    origin = "settings"
    if mirror is None:
        apt_mirror, apt_security = mirror_from_apt(
            host_apt_entries() if apt_entries is None else apt_entries, distro
        )
        if apt_mirror:
            mirror, origin = apt_mirror, "host apt sources"
            security = security or apt_security
    if mirror is None:
        mirror, dib_security = dib_default_mirror(distro, arch, release)
        origin = "diskimage-builder default"
        security = security or dib_security
    elif distro is Distro.DEBIAN and security is None:
        # A mirror of the archive usually carries the security suite next to it.
        security = f"{mirror}-security"
    return BaseArchive(
        distro=distro, release=release, mirror=mirror, security_mirror=security, origin=origin
    )


#: The package index apt fetches first (it prefers xz), per component and arch.
INDEX_NAME = "{component}/binary-{arch}/Packages.xz"


def _fetch(url: str, *, method: str = "GET", limit: int = MAX_RELEASE_BYTES) -> tuple[bytes, int]:
    """(body, Content-Length or -1) of an http(s) URL, the body capped at ``limit``."""
    request = urllib.request.Request(url, method=method)  # noqa: S310 (http(s) only, checked in settings/apt parsing)
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as resp:  # noqa: S310
            length = int(resp.headers.get("Content-Length") or -1)
            data = resp.read(limit + 1) if method == "GET" else b""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # its body is not read: a 404 is an answer, not a leak
        raise ArchiveError(
            f"cannot reach the package archive: {url}: {exc}",
            hint="check the mirror in the settings (mirrors:) or the host's apt sources",
        ) from exc
    if len(data) > limit:
        raise ArchiveError(f"{url}: larger than {limit} bytes; is this a package archive?")
    return data, length


def fetch_optional(url: str, *, limit: int = MAX_RELEASE_BYTES) -> bytes | None:
    """The body of an http(s) URL, or ``None`` when the server says it has no such file (404)."""
    try:
        return _fetch(url, limit=limit)[0]
    except ArchiveError as exc:
        cause = exc.__cause__
        if isinstance(cause, urllib.error.HTTPError) and cause.code in (404, 410):
            return None
        raise


def fetch_file(url: str, *, limit: int) -> bytes:
    """The body of an http(s) URL of the archive, capped at ``limit`` bytes."""
    return _fetch(url, limit=limit)[0]


_T = TypeVar("_T")
_R = TypeVar("_R")


def each_at_once(action: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[action(item) for item in items]``, each item on a thread of its own.

    For requests to the archive: each waits a round trip, so the suites cost
    one instead of one each. The first item's error (in ``items`` order) is
    raised once all have ended. The threads are daemons: a Ctrl-C in the main
    thread ends the build at once, not after a hung request's timeout.
    """
    results: list[_R | None] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)

    def one(n: int) -> None:
        try:
            results[n] = action(items[n])
        except BaseException as exc:  # handed to the caller below
            errors[n] = exc

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # in slices: Ctrl-C is not held up
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]  # every slot set: no error


def fetch_releases(archive: BaseArchive) -> dict[tuple[str, str], bytes]:
    """The ``InRelease`` file of every (mirror, suite) the build will use, fetched at once."""
    suites = archive.suites()
    bodies = each_at_once(lambda ms: _fetch(f"{ms[0]}/dists/{ms[1]}/InRelease")[0], suites)
    return dict(zip(suites, bodies, strict=True))


def release_fingerprint(releases: Mapping[tuple[str, str], bytes]) -> dict[str, str]:
    """sha256 of every suite's ``InRelease``: changes when the archive updates."""
    return {
        suite: "sha256:" + hashlib.sha256(data).hexdigest()
        for (_mirror, suite), data in releases.items()
    }


def release_index(inrelease: bytes) -> dict[str, tuple[str, int]]:
    """File name -> (sha256, size) from the ``SHA256:`` list of a Release/InRelease file."""
    files: dict[str, tuple[str, int]] = {}
    in_list = False
    for line in inrelease.decode("utf-8", "replace").splitlines():
        if not line[:1].isspace():
            in_list = line.strip() == "SHA256:"
            continue
        fields = line.split()
        if in_list and len(fields) == 3 and fields[1].isdigit():
            files[fields[2]] = (fields[0].lower(), int(fields[1]))
    return files


def indexed_sizes(inrelease: bytes) -> dict[str, int]:
    """File name -> size from the ``SHA256:`` list of a Release/InRelease file."""
    return {name: size for name, (_digest, size) in release_index(inrelease).items()}


def check_indexes(
    archive: BaseArchive,
    arch: Arch,
    releases: Mapping[tuple[str, str], bytes],
    component: str = "main",
) -> None:
    """Refuse a mirror whose package indexes disagree with its signed Release files.

    Every mismatch is reported at once. An index the Release file does not list
    (a suite without this architecture) is not checked; apt skips it too.
    """
    problems = []
    suites: list[str] = []
    name = INDEX_NAME.format(component=component, arch=arch.dib_arch)
    listed = [
        (f"{mirror}/dists/{suite}/{name}", suite, expected)
        for (mirror, suite), data in releases.items()
        if (expected := indexed_sizes(data).get(name)) is not None
    ]
    served_sizes = each_at_once(lambda item: _fetch(item[0], method="HEAD")[1], listed)
    for (url, suite, expected), served in zip(listed, served_sizes, strict=True):
        if served not in (-1, expected):
            problems.append(f"{url}: {served} bytes served, {expected} listed in InRelease")
            suites.append(f"{suite}/{arch.dib_arch}")
    if problems:
        raise InconsistentArchiveError(
            "the package archive serves indexes that do not match its signed InRelease"
            " (a mirror caught mid-sync?):\n  " + "\n  ".join(problems),
            suites=tuple(suites),
            hint="retry later, or point the settings (mirrors:) at a consistent mirror",
        )
