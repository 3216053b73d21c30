"""The archive's package indexes: is every package a recipe names really there?

apt inside diskimage-builder is the first to notice an unknown package, 40 s
into a build and with its message buried in the build log. The archive step
already holds every suite's ``InRelease``; this module fetches the
``Packages.xz`` index each one lists for the build's component and
architecture, checks it against the sha256 ``InRelease`` gives (an index that
does not match is refused, as apt would refuse it), caches it by that digest,
and checks the recipe's ``packages`` against the union of the suites: every
unknown name and every missing version at once, at the recipe entry's
``file:line:column``, with "did you mean".

Names a package ``Provides:`` count as known: apt installs a virtual package
when one package provides it.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import lzma
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagefactory.errors import ArchiveError, Diagnostic, RecipeError
from imagefactory.fsutil import atomic_write
from imagefactory.mirrors import INDEX_NAME, BaseArchive, fetch_file, release_index
from imagefactory.recipe.model import PackagePlace, Recipe
from imagefactory.vocab import Arch

#: Debian's main Packages.xz is ~9 MiB (~45 MiB unpacked); refuse anything absurd.
MAX_INDEX_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 512 * 1024 * 1024


@dataclass
class PackageIndex:
    """Every package name of some suites, with its versions, and the virtual names."""

    versions: dict[str, set[str]] = field(default_factory=dict)
    provided: set[str] = field(default_factory=set)
    #: ``mirror/dists/suite/index`` of each index read, for messages.
    sources: list[str] = field(default_factory=list)
    #: Name -> version -> the ``Architecture`` its stanza gives (``all`` or the image's):
    #: what an installed package is matched against (:meth:`lists`).
    arches: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Cached indexes whose architectures are read only when :meth:`lists` first asks
    #: (the label step, after diskimage-builder): a cache hit never reads them.
    pending: list[Callable[[], Mapping[str, Mapping[str, str]]]] = field(
        default_factory=list, compare=False, repr=False
    )

    def add(self, text: str, source: str) -> None:
        """Add one ``Packages`` file's stanzas."""
        self.sources.append(source)
        name = version = arch = None
        for line in [*text.splitlines(), ""]:
            stanza_ends = not line.strip() or line.startswith("Package:")
            if stanza_ends and name is not None and version is not None and arch is not None:
                self.arches.setdefault(name, {})[version] = arch
            if not line.strip():
                name = version = arch = None
            elif line.startswith("Package:"):
                name, version, arch = line[8:].strip(), None, None
                self.versions.setdefault(name, set())
            elif line.startswith("Version:") and name is not None:
                version = line[8:].strip()
                self.versions[name].add(version)
            elif line.startswith("Architecture:"):
                arch = line[13:].strip()
            elif line.startswith("Provides:"):
                for item in line[9:].split(","):
                    self.provided.add(item.split("(")[0].strip())

    def merge(
        self,
        versions: Mapping[str, Iterable[str]],
        provided: Iterable[str],
        arches: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Add the names of one index already read (:func:`_read_parsed`)."""
        if not self.versions:  # the first index: taken over whole
            self.versions = {name: set(have) for name, have in versions.items()}
        else:
            for name, have in versions.items():
                self.versions.setdefault(name, set()).update(have)
        self.provided.update(provided)
        for name, by_version in (arches or {}).items():
            self.arches.setdefault(name, {}).update(by_version)

    def copy(self) -> PackageIndex:
        """An independent copy (adding to it leaves this one as it is)."""
        return PackageIndex(
            {name: set(have) for name, have in self.versions.items()},
            set(self.provided),
            list(self.sources),
            {name: dict(by_version) for name, by_version in self.arches.items()},
            list(self.pending),
        )

    def knows(self, name: str) -> bool:
        return name in self.versions or name in self.provided

    def lists(self, name: str, version: str, arch: str) -> bool:
        """Whether an index lists this very package: name, version and architecture."""
        while self.pending:
            self.merge({}, (), self.pending.pop(0)())
        return self.arches.get(name, {}).get(version) == arch

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, list(self.versions), n=3, cutoff=0.75)
        # Two letters swapped ('tiem') score no better than other near names:
        # put the same letters first.
        letters = sorted(name)
        swapped = [c for c in self.versions if len(c) == len(name) and sorted(c) == letters]
        close = list(dict.fromkeys([*swapped[:1], *close]))[:3]
        if not close:
            return None
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def indexed_sha256(inrelease: bytes) -> dict[str, str]:
    """File name -> sha256 from the ``SHA256:`` list of a Release/InRelease file."""
    return {name: digest for name, (digest, _size) in release_index(inrelease).items()}


def fetch_index(
    url: str,
    digest: str,
    size: int | None,
    *,
    cache_dir: Path,
    on_status: Callable[[str], None] = lambda text: None,
) -> bytes:
    """An index file checked against the sha256 (and size) its signed Release lists.

    Kept in ``cache_dir`` by digest, so an unchanged index is fetched once; an
    index that does not match is refused, as apt would refuse it.
    """
    cached = cache_dir / f"{digest}{_suffix(url)}"
    data = _read_cached(cached, digest)
    if data is not None:
        return data
    on_status(f"fetching {url}")
    data = fetch_file(url, limit=MAX_INDEX_BYTES)
    got = hashlib.sha256(data).hexdigest()
    if got != digest or (size is not None and len(data) != size):
        raise ArchiveError(
            f"{url}: sha256 {got} ({len(data)} bytes), but the signed Release lists"
            f" {digest}{f' ({size} bytes)' if size is not None else ''}"
            " (a mirror caught mid-sync, or a tampered index)",
            hint="retry later, or point the settings (mirrors:) at a consistent mirror",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, data, 0o644, durable=False)
    return data


def _suffix(url: str) -> str:
    for suffix in (".xz", ".gz"):
        if url.endswith(suffix):
            return suffix
    return ""


def load_index(
    archive: BaseArchive,
    arch: Arch,
    releases: Mapping[tuple[str, str], bytes],
    *,
    cache_dir: Path,
    component: str = "main",
    on_status: Callable[[str], None] = lambda text: None,
) -> PackageIndex:
    """The package index of every suite the build uses (fetched once per digest, cached)."""
    index = PackageIndex()
    name = INDEX_NAME.format(component=component, arch=arch.dib_arch)
    for (mirror, suite), inrelease in releases.items():
        digest = indexed_sha256(inrelease).get(name)
        if digest is None:
            continue  # this suite has no index for the arch; apt skips it too
        url = f"{mirror}/dists/{suite}/{name}"
        parsed = _read_parsed(cache_dir / f"{digest}.names.json", digest)
        if parsed is not None:
            # What unpacking and reading this very index gave before (most of a
            # second per suite, every build): a cached rebuild costs none of it.
            index.sources.append(url)
            index.merge(*parsed)
            index.pending.append(
                functools.partial(_cached_arches, url, digest, cache_dir, on_status)
            )
            continue
        one = _read_index(url, digest, cache_dir, on_status)
        index.sources.append(url)
        index.merge(one.versions, one.provided, one.arches)
    return index


def _read_index(
    url: str, digest: str, cache_dir: Path, on_status: Callable[[str], None]
) -> PackageIndex:
    """Fetch (or take from the cache) and parse one index; keep what it gave by digest."""
    data = fetch_index(url, digest, None, cache_dir=cache_dir, on_status=on_status)
    on_status(f"reading {url.rsplit('/dists/', 1)[-1]}")
    one = PackageIndex()
    one.add(unpack_index(data, url), url)
    _write_parsed(cache_dir / f"{digest}.names.json", digest, one)
    _write_arches(cache_dir / f"{digest}.arches.json", digest, one)
    return one


def _cached_arches(
    url: str, digest: str, cache_dir: Path, on_status: Callable[[str], None]
) -> Mapping[str, Mapping[str, str]]:
    """The architectures of the index of ``digest``, as kept beside its names (or read again).

    Kept apart from the names (:func:`_read_parsed`), which every build reads
    before its cache lookup, so a cache hit does not pay for them.
    """
    path = cache_dir / f"{digest}.arches.json"
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and doc.get("index_sha256") == digest:
        arches = doc.get("arches")
        if isinstance(arches, dict) and all(isinstance(v, dict) for v in arches.values()):
            return arches
    return _read_index(url, digest, cache_dir, on_status).arches


def _read_parsed(path: Path, digest: str) -> tuple[dict[str, list[str]], list[str]] | None:
    """The names and versions read from the index of ``digest`` before, if cached.

    Derived from an index whose sha256 ``InRelease`` listed; like the index
    cache a convenience: unreadable or not for this digest, it is made again.
    It only feeds this early check (apt in the build resolves for real).
    """
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("index_sha256") != digest:
        return None
    versions, provided = doc.get("versions"), doc.get("provided")
    if not isinstance(versions, dict) or not isinstance(provided, list):
        return None
    return versions, provided


def _write_parsed(path: Path, digest: str, index: PackageIndex) -> None:
    doc = {
        "index_sha256": digest,
        "versions": {name: sorted(have) for name, have in index.versions.items()},
        "provided": sorted(index.provided),
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written costs time only
        atomic_write(path, json.dumps(doc, separators=(",", ":")), 0o644, durable=False)


def _write_arches(path: Path, digest: str, index: PackageIndex) -> None:
    doc = {"index_sha256": digest, "arches": index.arches}
    with contextlib.suppress(OSError):
        atomic_write(path, json.dumps(doc, separators=(",", ":")), 0o644, durable=False)


def _read_cached(path: Path, digest: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # The cache is a convenience, never trusted: a damaged entry is fetched again.
    return data if hashlib.sha256(data).hexdigest() == digest else None


def unpack_index(data: bytes, url: str) -> str:
    """The text of a ``Packages``, ``Packages.xz`` or ``Packages.gz`` file (by its URL)."""
    try:
        if url.endswith(".xz"):
            unpacked = lzma.LZMADecompressor().decompress(data, max_length=MAX_UNPACKED_BYTES)
        elif url.endswith(".gz"):
            unpacked = zlib.decompressobj(wbits=31).decompress(data, MAX_UNPACKED_BYTES)
        else:
            unpacked = data[:MAX_UNPACKED_BYTES]
    except (lzma.LZMAError, zlib.error) as exc:
        raise ArchiveError(f"{url}: not a compressed index: {exc}") from exc
    return unpacked.decode("utf-8", "replace")


def check_packages(wanted: Iterable[PackagePlace], index: PackageIndex, where: str) -> None:
    """Raise :class:`RecipeError` naming every entry the index lacks (all at once).

    ``where`` says which archive was asked (``debian bookworm main amd64``).
    """
    problems = []
    for item in wanted:
        name, _, version = item.entry.partition("=")
        if not index.knows(name):
            message = f"no package '{name}' in {where}"
            hint = index.suggest(name) or (
                "a package from another repository needs that repository in the recipe"
            )
        elif version and version not in index.versions.get(name, set()):
            have = sorted(index.versions.get(name, set()))
            message = f"no version '{version}' of '{name}' in {where}"
            hint = "it has: " + (", ".join(have) if have else "none (a virtual package)")
        else:
            continue
        problems.append(Diagnostic(item.file, item.line, item.column, item.path, message, hint))
    if problems:
        raise RecipeError(problems)


def check_recipe_packages(
    recipe: Recipe,
    archive: BaseArchive,
    releases: Mapping[tuple[str, str], bytes],
    *,
    cache_dir: Path,
    on_status: Callable[[str], None] = lambda text: None,
    extra: Callable[[PackageIndex], str] | None = None,
    loaded: PackageIndex | None = None,
) -> PackageIndex | None:
    """Check the recipe's packages against the archive, before diskimage-builder starts.

    ``extra`` adds the indexes of the recipe's own repositories (already
    verified) to the archive's and says what it added, for the message.
    ``loaded``: the archive's index as :func:`load_index` read it already (it
    is copied, not changed). Returns the index read, or ``None`` when no suite
    lists an index for the recipe's architecture (nothing to check against;
    apt will judge).
    """
    if not recipe.packages:
        return None
    arch = recipe.base.arch
    if loaded is not None:
        index = loaded.copy()
    else:
        index = load_index(archive, arch, releases, cache_dir=cache_dir, on_status=on_status)
    if not index.sources:
        return None
    suites = len(index.sources)
    added = extra(index) if extra is not None else ""
    places = recipe.package_places or tuple(
        PackagePlace(p, str(recipe.sources[0]) if recipe.sources else recipe.name, 1, 1, "")
        for p in recipe.packages
    )
    where = f"{archive.distro} {archive.release} main {arch.dib_arch} ({suites} suites)"
    if added:
        where += f" or {added}"
    check_packages(places, index, where)
    return index
