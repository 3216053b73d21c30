"""Recipe packages against the archive's Packages indexes, served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import lzma
from pathlib import Path

import pytest

from imagefactory.errors import ArchiveError, RecipeError
from imagefactory.mirrors import BaseArchive, fetch_releases
from imagefactory.packageindex import (
    PackageIndex,
    check_recipe_packages,
    indexed_sha256,
    load_index,
)
from imagefactory.recipe import load_recipe
from imagefactory.vocab import Arch, Distro
from tests.core.test_mirrors import archive_root  # noqa: F401 -- the served directory

INDEX = "main/binary-amd64/Packages.xz"


def _stanzas(*packages: tuple[str, str, str]) -> bytes:
    text = ""
    for name, version, provides in packages:
        text += f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        text += f"Provides: {provides}\n" if provides else ""
        text += "\n"
    return lzma.compress(text.encode())


def _suite(root: Path, suite: str, index: bytes, listed: bytes | None = None) -> None:
    dists = root / "debian" / "dists" / suite
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    (dists / "main" / "binary-amd64" / "Packages.xz").write_bytes(index)
    digest = hashlib.sha256(listed if listed is not None else index).hexdigest()
    (dists / "InRelease").write_text(f"Origin: Test\nSHA256:\n {digest} {len(index)} {INDEX}\n")


def _no_index(root: Path, suite: str) -> None:
    """A suite whose InRelease lists no index for this arch: nothing to read there."""
    dists = root / "debian" / "dists" / suite
    dists.mkdir(parents=True)
    (dists / "InRelease").write_text("Origin: Test\nSHA256:\n")


def _recipe(tmp_path: Path, packages: str) -> Path:
    path = tmp_path / "wn.yaml"
    path.write_text(
        'name: wn\nversion: "1"\nbase: {distro: debian, release: "12"}\nvo: cms\n'
        f"packages:\n{packages}"
    )
    return path


def _archive(base: str) -> BaseArchive:
    return BaseArchive(Distro.DEBIAN, "bookworm", f"{base}/debian", None, "settings")


def test_unknown_names_and_versions_all_at_once_with_their_places(
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("apptainer-suid", "1.0", ""), ("less", "590-2", "")))
    _suite(root, "bookworm-updates", _stanzas(("less", "590-2.1", ""), ("mawk", "1", "awk")))
    recipe = load_recipe(
        _recipe(tmp_path, "  - less=590-2.1\n  - awk\n  - cvmfs\n  - les\n  - less=9\n")
    )
    archive = _archive(base)
    with pytest.raises(RecipeError) as info:
        check_recipe_packages(
            recipe, archive, fetch_releases(archive), cache_dir=tmp_path / "cache"
        )
    rendered = [d.render() for d in info.value.diagnostics]
    where = "debian bookworm main amd64 (2 suites)"
    recipe_file = tmp_path / "wn.yaml"
    assert rendered == [
        f"{recipe_file}:8:5: .packages[2]: no package 'cvmfs' in {where}"
        " (a package from another repository needs that repository in the recipe)",
        f"{recipe_file}:9:5: .packages[3]: no package 'les' in {where} (did you mean 'less'?)",
        f"{recipe_file}:10:5: .packages[4]: no version '9' of 'less' in {where}"
        " (it has: 590-2, 590-2.1)",
    ]


def test_a_cached_index_is_used_without_the_mirror(
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("less", "1", "")))
    _no_index(root, "bookworm-updates")
    archive = _archive(base)
    releases = fetch_releases(archive)
    recipe = load_recipe(_recipe(tmp_path, "  - less\n"))
    assert check_recipe_packages(recipe, archive, releases, cache_dir=tmp_path / "c")
    (root / "debian" / "dists" / "bookworm" / INDEX).unlink()
    index = check_recipe_packages(recipe, archive, releases, cache_dir=tmp_path / "c")
    assert index is not None
    assert index.knows("less")


def test_an_index_that_does_not_match_its_inrelease_is_refused(
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("less", "1", "")), listed=b"other bytes")
    _no_index(root, "bookworm-updates")
    archive = _archive(base)
    recipe = load_recipe(_recipe(tmp_path, "  - less\n"))
    with pytest.raises(ArchiveError, match="but the signed Release lists"):
        check_recipe_packages(recipe, archive, fetch_releases(archive), cache_dir=tmp_path)


def test_indexed_sha256() -> None:
    text = b"Origin: x\nMD5Sum:\n 00 1 a\nSHA256:\n AB 12 main/binary-amd64/Packages.xz\n"
    assert indexed_sha256(text) == {"main/binary-amd64/Packages.xz": "ab"}


def test_a_second_check_reads_the_names_not_the_index(
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What unpacking an index gave is kept by its digest: a cached rebuild skips the xz."""
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("less", "1", ""), ("mawk", "2", "awk")))
    _no_index(root, "bookworm-updates")
    archive = _archive(base)
    releases = fetch_releases(archive)
    recipe = load_recipe(_recipe(tmp_path, "  - less=1\n  - awk\n"))
    cache = tmp_path / "c"
    assert check_recipe_packages(recipe, archive, releases, cache_dir=cache)

    def no_unpacking(data: bytes, url: str) -> str:
        raise AssertionError(f"{url} unpacked again")

    monkeypatch.setattr("imagefactory.packageindex.unpack_index", no_unpacking)
    index = check_recipe_packages(recipe, archive, releases, cache_dir=cache)
    assert index is not None
    assert index.versions["less"] == {"1"}
    assert index.knows("awk")
    # Names cached for another index are not this index's: it is read again.
    [names] = cache.glob("*.names.json")
    names.write_text(names.read_text().replace('"index_sha256":"', '"index_sha256":"0'))
    with pytest.raises(AssertionError, match="unpacked again"):
        check_recipe_packages(recipe, archive, releases, cache_dir=cache)


def test_each_versions_architecture_is_kept_and_read_only_when_asked(
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SBOM's origins match name, version and arch: cached beside the names, which
    every build reads before its cache lookup, and read only when a match is asked for."""
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("less", "1", ""), ("mawk", "2", "awk")))
    _no_index(root, "bookworm-updates")
    archive = _archive(base)
    releases = fetch_releases(archive)
    cache = tmp_path / "c"
    first = load_index(archive, Arch.X86_64, releases, cache_dir=cache)
    assert first.lists("less", "1", "amd64")
    assert not first.lists("less", "1", "i386")
    assert not first.lists("less", "2", "amd64")
    [arches] = cache.glob("*.arches.json")
    doc = json.loads(arches.read_text())
    assert doc["arches"] == {"less": {"1": "amd64"}, "mawk": {"2": "amd64"}}
    [names] = cache.glob("*.names.json")
    assert set(json.loads(names.read_text())) == {"index_sha256", "versions", "provided"}

    read: list[Path] = []
    real_read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        read.append(path)
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    cached = load_index(archive, Arch.X86_64, releases, cache_dir=cache)
    assert arches not in read  # the names only, as a cache hit needs
    assert cached.lists("mawk", "2", "amd64")
    assert arches in read
    # A damaged or missing architectures file: the (cached) index is read again.
    monkeypatch.undo()
    arches.write_text("{")
    assert load_index(archive, Arch.X86_64, releases, cache_dir=cache).lists("less", "1", "amd64")
    assert json.loads(arches.read_text())["arches"] == doc["arches"]
    # check_recipe_packages copies an index it is handed: adding to it leaves the original.
    recipe = load_recipe(_recipe(tmp_path, "  - less\n"))
    checked = check_recipe_packages(
        recipe, archive, releases, cache_dir=cache, loaded=first, extra=_add_extra
    )
    assert checked is not None
    assert checked.knows("extra")
    assert not first.knows("extra")


def _add_extra(index: PackageIndex) -> str:
    index.add("Package: extra\nVersion: 1\nArchitecture: all\n", "extra")
    return "repository 'extra'"
