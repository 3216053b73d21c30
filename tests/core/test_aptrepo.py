"""Third-party apt repositories: a real signed repository on 127.0.0.1, verified with gpgv.

The repository is made here (dpkg-deb, apt-ftparchive, a fresh ed25519 key
in a temporary GNUPGHOME; :mod:`tests.fakes.aptrepo`) and served by the
loopback server of the archive tests. Every refusal is checked for its reason.
"""

from __future__ import annotations

import hashlib
import lzma
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.aptrepo import (
    RepositoryError,
    add_indexes,
    repository_key,
    verify_repositories,
    verify_repository,
)
from imagefactory.errors import HostError, RecipeError
from imagefactory.mirrors import BaseArchive, fetch_releases
from imagefactory.packageindex import check_recipe_packages
from imagefactory.pgpkey import read_public_key
from imagefactory.recipe import BuildLimits, Recipe, RepositoryAllowance, load_recipe
from imagefactory.vocab import Arch, Distro
from tests.core.test_mirrors import archive_root  # noqa: F401 -- the served directory
from tests.core.test_packageindex import _stanzas, _suite
from tests.fakes.aptrepo import (
    COMPONENT,
    PACKAGE,
    SUITE,
    SigningKey,
    build_deb,
    make_key,
    make_repository,
    sign,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SigningKey, SigningKey]]:
    """The repository's key and another one (made once: key generation takes a moment)."""
    base = tmp_path_factory.mktemp("keys")
    right, wrong = make_key(base / "right"), make_key(base / "wrong", "someone else")
    yield right, wrong
    right.stop()
    wrong.stop()


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deb(tmp_path_factory.mktemp("deb"))


def _recipe(
    directory: Path,
    url: str,
    key: SigningKey,
    *,
    packages: str = f"[{PACKAGE}]",
    key_entry: str | None = None,
) -> Path:
    (directory / "repo.asc").write_bytes(key.export())
    entry = key_entry or f"{{file: repo.asc, fingerprint: {key.fingerprint}}}"
    path = directory / "wn.yaml"
    path.write_text(
        'name: wn\nversion: "1"\nbase: {distro: debian, release: "12"}\nvo: cms\n'
        f"repositories:\n  - name: test\n    url: {url}\n    suites: [{SUITE}]\n"
        f"    key: {entry}\n"
        f"packages: {packages}\n"
    )
    return path


def _limits(url: str, *fingerprints: str) -> BuildLimits:
    return BuildLimits(allowed_repositories=(RepositoryAllowance(url, frozenset(fingerprints)),))


def _load(directory: Path, url: str, key: SigningKey, **kwargs: str) -> Recipe:
    return load_recipe(_recipe(directory, url, key, **kwargs), _limits(url, key.fingerprint))


@pytest.fixture
def served(
    archive_root: tuple[Path, str],  # noqa: F811
    keys: tuple[SigningKey, SigningKey],
    deb: Path,
) -> tuple[Path, str]:
    """(repository directory, its URL): signed by the right key, InRelease."""
    root, base = archive_root
    make_repository(root / "third", keys[0], [deb])
    return root / "third", f"{base}/third"


def _verify(recipe: Recipe, tmp_path: Path, keys_dir: Path | None = None) -> None:
    verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=keys_dir, cache_dir=tmp_path / "cache"
    )


def test_the_pinned_key_verifies_and_the_package_resolves(
    served: tuple[Path, str],
    keys: tuple[SigningKey, SigningKey],
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    repo_dir, url = served
    root, base = archive_root
    # The main archive (no hello-wn there) and the repository, in one package check.
    _suite(root, "bookworm", _stanzas(("less", "590-2", "")))
    _suite(root, "bookworm-updates", _stanzas(("less", "590-2", "")))
    recipe = _load(tmp_path, url, keys[0], packages=f"[less, {PACKAGE}]")
    verified = verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=None, cache_dir=tmp_path / "cache"
    )
    [repo] = verified
    assert repo.key.fingerprint == keys[0].fingerprint
    release = (repo_dir / "dists" / SUITE / "InRelease").read_bytes()
    assert b"-----BEGIN PGP SIGNATURE-----" in release
    # The verified text is the signed part only, not the file with its signature.
    assert b"SIGNATURE" not in repo.releases[SUITE]
    assert repo.to_dict()["release"][SUITE].startswith("sha256:")
    archive = BaseArchive(Distro.DEBIAN, "bookworm", f"{base}/debian", None, "settings")
    index = check_recipe_packages(
        recipe,
        archive,
        fetch_releases(archive),
        cache_dir=tmp_path / "cache",
        extra=lambda index: add_indexes(index, verified),
    )
    assert index is not None
    assert index.knows(PACKAGE)
    assert index.versions[PACKAGE] == {"1.0-1"}


def test_a_missing_package_is_reported_with_did_you_mean_against_the_repository(
    served: tuple[Path, str],
    keys: tuple[SigningKey, SigningKey],
    archive_root: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    _repo_dir, url = served
    root, base = archive_root
    _suite(root, "bookworm", _stanzas(("less", "590-2", "")))
    _suite(root, "bookworm-updates", _stanzas(("less", "590-2", "")))
    recipe = _load(tmp_path, url, keys[0], packages="[hello-wm]")
    verified = verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=None, cache_dir=tmp_path / "cache"
    )
    archive = BaseArchive(Distro.DEBIAN, "bookworm", f"{base}/debian", None, "settings")
    with pytest.raises(RecipeError) as info:
        check_recipe_packages(
            recipe,
            archive,
            fetch_releases(archive),
            cache_dir=tmp_path / "cache",
            extra=lambda index: add_indexes(index, verified),
        )
    [problem] = [d.render() for d in info.value.diagnostics]
    assert problem == (
        f"{tmp_path / 'wn.yaml'}:10:12: .packages[0]: no package 'hello-wm' in debian bookworm"
        " main amd64 (2 suites) or repository 'test' (did you mean 'hello-wn'?)"
    )


def test_a_release_signed_by_another_key_is_refused_naming_the_pinned_fingerprint(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    right, wrong = keys
    sign(repo_dir, wrong)
    recipe = _load(tmp_path, url, right)
    with pytest.raises(RepositoryError) as info:
        _verify(recipe, tmp_path)
    message = info.value.message
    assert f"not by the pinned key {right.fingerprint}: refused" in message
    # gpgv names the signer by its long key ID: the other key's.
    assert wrong.fingerprint[-16:] in message
    assert f"repository 'test' suite '{SUITE}'" in message


def test_an_unsigned_release_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    sign(repo_dir, None)
    assert (repo_dir / "dists" / SUITE / "Release").is_file()
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError, match=r"the Release file is not signed .* refused"):
        _verify(recipe, tmp_path)


def test_an_inrelease_that_is_not_clearsigned_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    sign(repo_dir, None)
    dists = repo_dir / "dists" / SUITE
    (dists / "Release").rename(dists / "InRelease")
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError) as info:
        _verify(recipe, tmp_path)
    assert f"does not verify against the pinned key {keys[0].fingerprint}" in info.value.message
    assert "NODATA" in info.value.message


def test_a_release_signed_by_the_pinned_key_and_another_is_accepted_as_apt_does(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    right, wrong = keys
    dists = repo_dir / "dists" / SUITE
    sign(repo_dir, None)
    # Both keys in one home, one clearsigned InRelease with two signatures (key rotation).
    both = tmp_path / "both"
    both.mkdir(mode=0o700)
    for key in (right, wrong):
        secret = subprocess.run(
            [*key.gpg("--pinentry-mode", "loopback", "--passphrase", ""), "--export-secret-keys"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            ["gpg", "--homedir", str(both), "--batch", "--import"],
            input=secret,
            check=True,
            capture_output=True,
        )
    rotating = SigningKey(both, right.fingerprint)
    subprocess.run(
        [
            *rotating.gpg("-u", right.fingerprint, "-u", wrong.fingerprint, "--clearsign"),
            "--output",
            str(dists / "InRelease"),
            str(dists / "Release"),
        ],
        check=True,
        capture_output=True,
    )
    (dists / "Release").unlink()
    rotating.stop()
    recipe = _load(tmp_path, url, right)
    [repo] = verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=None, cache_dir=tmp_path / "cache"
    )
    assert b"Label: imagefactory-tests" in repo.releases[SUITE]
    # Pinned to the other key, whose signature is there too: verified with that key alone.
    other = _load(tmp_path, url, wrong)
    [verified] = verify_repositories(
        other.repositories, Arch.X86_64, keys_dir=None, cache_dir=tmp_path / "cache"
    )
    assert verified.key.fingerprint == wrong.fingerprint


def test_a_detached_signature_verifies_and_a_tampered_release_does_not(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    sign(repo_dir, keys[0], detached=True)
    recipe = _load(tmp_path, url, keys[0])
    [repo] = verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=None, cache_dir=tmp_path / "cache"
    )
    release = repo_dir / "dists" / SUITE / "Release"
    assert repo.releases[SUITE] == release.read_bytes()
    release.write_bytes(
        release.read_bytes().replace(b"Origin: imagefactory", b"Origin: imagefactorx")
    )
    with pytest.raises(RepositoryError, match="BAD signature by the pinned key"):
        _verify(recipe, tmp_path)


def test_a_byte_changed_in_a_signed_inrelease_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    inrelease = repo_dir / "dists" / SUITE / "InRelease"
    data = inrelease.read_bytes()
    at = data.index(b"Label: imagefactory-tests") + len("Label: ")
    inrelease.write_bytes(data[:at] + b"X" + data[at + 1 :])
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError) as info:
        _verify(recipe, tmp_path)
    assert "has a BAD signature" in info.value.message
    assert keys[0].fingerprint in info.value.message


def test_a_packages_index_that_does_not_match_the_signed_release_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    repo_dir, url = served
    index = repo_dir / "dists" / SUITE / COMPONENT / "binary-amd64" / "Packages.xz"
    text = lzma.decompress(index.read_bytes()) + b"\nPackage: injected\nVersion: 6.6.6\n"
    index.write_bytes(lzma.compress(text))
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError) as info:
        _verify(recipe, tmp_path)
    message = info.value.message
    assert f"{url}/dists/{SUITE}/main/binary-amd64/Packages.xz" in message
    assert hashlib.sha256(index.read_bytes()).hexdigest() in message
    assert "but the signed Release lists" in message


def test_a_release_of_another_suite_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], deb: Path, tmp_path: Path
) -> None:
    repo_dir, url = served
    make_repository(repo_dir, keys[0], [deb], suite="wn-testing")
    stable = repo_dir / "dists" / SUITE
    (stable / "InRelease").write_bytes(
        (repo_dir / "dists" / "wn-testing" / "InRelease").read_bytes()
    )
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError, match=f"Release of wn-testing, not of '{SUITE}'"):
        _verify(recipe, tmp_path)


def test_a_suite_without_an_index_for_the_image_arch_is_refused(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    _repo_dir, url = served
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError, match="lists no main/binary-arm64 package index"):
        verify_repository(
            recipe.repositories[0], Arch.AARCH64, keys_dir=None, cache_dir=tmp_path / "c"
        )


def test_a_fingerprint_alone_takes_the_key_from_the_site_directory_only(
    served: tuple[Path, str], keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    _repo_dir, url = served
    right, wrong = keys
    recipe = _load(tmp_path, url, right, key_entry=f"{{fingerprint: {right.fingerprint}}}")
    assert recipe.repositories[0].key is None
    with pytest.raises(HostError, match=r"no key directory \(build.repository_keys\)"):
        _verify(recipe, tmp_path)
    site = tmp_path / "site-keys"
    site.mkdir()
    (site / "other.asc").write_bytes(wrong.export())
    with pytest.raises(HostError, match=f"pins key {right.fingerprint}, which is not in"):
        _verify(recipe, tmp_path, site)
    (site / "repo.gpg").write_bytes(right.export(armor=False))
    [repo] = verify_repositories(
        recipe.repositories, Arch.X86_64, keys_dir=site, cache_dir=tmp_path / "cache"
    )
    assert repo.key.binary == read_public_key(right.export()).binary
    (site / "junk.asc").write_text("not a key")
    with pytest.raises(HostError, match=r"junk\.asc: not a usable repository key"):
        repository_key(recipe.repositories[0], site)


def test_an_unreachable_repository_is_an_archive_error(
    keys: tuple[SigningKey, SigningKey], tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9/none"
    recipe = _load(tmp_path, url, keys[0])
    with pytest.raises(RepositoryError, match="cannot reach the package archive") as info:
        _verify(recipe, tmp_path)
    assert info.value.exit_code == 2
