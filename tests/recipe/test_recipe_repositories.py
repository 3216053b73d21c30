"""The recipe's `repositories`: validation at file:line:column, extends, the site's allowlist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.lint import lint_recipe
from imagefactory.pgpkey import read_public_key
from imagefactory.recipe import BuildLimits, RepositoryAllowance, load_recipe
from tests.fakes.aptrepo import SigningKey, make_key
from tests.recipe.recipe_helpers import MINIMAL, problems, write

URL = "https://repo.example.org/cvmfs/debian"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SigningKey, SigningKey]]:
    base = tmp_path_factory.mktemp("keys")
    right, other = make_key(base / "a"), make_key(base / "b", "other")
    yield right, other
    right.stop()
    other.stop()


def _allow(*fingerprints: str, url: str = "https://repo.example.org/cvmfs") -> BuildLimits:
    return BuildLimits(allowed_repositories=(RepositoryAllowance(url, frozenset(fingerprints)),))


def test_a_repository_with_its_key_file_loads(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    key = keys[0]
    (tmp_path / "cvmfs.asc").write_bytes(key.export())
    path = write(
        tmp_path,
        "wn.yaml",
        MINIMAL
        + f"""\
repositories:
  - name: cvmfs
    url: {URL}/
    suites: [bookworm-prod]
    key: {{file: cvmfs.asc, fingerprint: {key.fingerprint.lower()}}}
    arch: [x86_64]
""",
    )
    recipe = load_recipe(path, _allow(key.fingerprint))
    [repo] = recipe.repositories
    assert repo.url == URL  # the trailing '/' dropped
    assert repo.components == ("main",)
    assert repo.fingerprint == key.fingerprint
    assert repo.key == read_public_key(key.export()).binary
    assert (tmp_path / "cvmfs.asc") in recipe.sources
    canonical = recipe.canonical()["repositories"]
    assert canonical[0]["fingerprint"] == key.fingerprint
    assert canonical[0]["arch"] == ["x86_64"]
    # The key's content is part of the recipe's identity.
    (tmp_path / "cvmfs.asc").write_bytes(key.export(armor=False))
    again = load_recipe(path, _allow(key.fingerprint))
    assert again.digest == recipe.digest  # the same key, armored or not
    # A recipe without repositories keeps its canonical form (and digest).
    assert "repositories" not in load_recipe(write(tmp_path, "m.yaml", MINIMAL)).canonical()


def test_every_repository_problem_at_once(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    right, other = keys
    (tmp_path / "other.asc").write_bytes(other.export())
    (tmp_path / "junk.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nzz\n")
    spaced = " ".join(right.fingerprint[i : i + 4] for i in range(0, 40, 4))
    path = write(
        tmp_path,
        "wn.yaml",
        MINIMAL
        + f"""\
repositories:
  - name: local
    url: file:///srv/repo
    suites: [stable]
    key: {{fingerprint: {right.fingerprint}}}
  - name: secret
    url: https://user:pw@repo.example.org/cvmfs
    suits: [stable]
    key: {{fingerprint: "{spaced}"}}
  - name: nokey
    url: {URL}
    suites: []
    key: {{}}
  - name: mismatch
    url: {URL}
    suites: [stable]
    key: {{file: other.asc, fingerprint: {right.fingerprint}}}
  - name: junk
    url: {URL}
    suites: [stable]
    key: {{file: junk.asc}}
  - name: local
    url: {URL}
    suites: [stable]
    key: {{fingerprint: {right.fingerprint}}}
""",
    )
    found = problems(path, _allow(right.fingerprint))
    where = str(path)
    assert found == [
        f"{where}:7:10: .repositories[0].url: expected an http or https URL, found"
        " 'file:///srv/repo' (apt repositories are added over http(s); the pinned key"
        " verifies what they serve (file:, cdrom:, ftp: and others are refused))",
        f"{where}:10:5: .repositories[1]: missing required key 'suites'",
        f"{where}:11:10: .repositories[1].url: expected a URL without credentials"
        " (user:password@), found one (recipes are published and signed: put no secrets in"
        " them; a site that needs credentials configures them on the build host)",
        f"{where}:12:5: .repositories[1].suits: unknown key 'suits' (did you mean 'suites'?)",
        f"{where}:13:24: .repositories[1].key.fingerprint: expected a 40-hex-digit OpenPGP"
        f" fingerprint, found '{spaced}' (write it as 40 hex digits without spaces:"
        f" '{right.fingerprint}')",
        f"{where}:16:13: .repositories[2].suites: expected at least one item in 'suites'",
        f"{where}:17:10: .repositories[2].key: expected 'file', 'fingerprint' or both: the"
        " repository's key must be pinned (a key is never fetched unpinned; give the key"
        " file, its fingerprint, or both)",
        f"{where}:21:41: .repositories[3].key.fingerprint: the key file holds key"
        f" {other.fingerprint}, not the pinned {right.fingerprint} (pin the fingerprint of"
        " the key the repository signs with, and ship that key)",
        f"{where}:25:17: .repositories[4].key.file: 'junk.asc' is not a usable OpenPGP public"
        " key: expected one '-----BEGIN PGP PUBLIC KEY BLOCK-----' ..."
        " '-----END PGP PUBLIC KEY BLOCK-----' block (a public key) (export the repository's"
        " signing key alone (gpg --export --armor FINGERPRINT))",
        f"{where}:26:11: .repositories[5].name: duplicate name 'local' (first at line 6)",
    ]


def test_the_site_allows_no_repository_unless_it_lists_it(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    right, other = keys
    text = (
        MINIMAL + f"repositories:\n  - name: cvmfs\n    url: {URL}\n    suites: [stable]\n"
        f"    key: {{fingerprint: {right.fingerprint}}}\n"
    )
    path = write(tmp_path, "wn.yaml", text)
    [closed] = problems(path)
    assert closed == (
        f"{path}:7:10: .repositories[0].url: repository 'cvmfs' ({URL}) is not allowed by this"
        " build host (the site's settings must list it: build.allowed_repositories:"
        f" [{{url_prefix: {URL}, fingerprints: [{right.fingerprint}]}}] (no repository is"
        " allowed now))"
    )
    [wrong_key] = problems(path, _allow(other.fingerprint))
    assert f"key {right.fingerprint} is not one this build host allows for {URL}" in wrong_key
    assert f"(allowed: {other.fingerprint})" in wrong_key
    # A prefix covers what is under it at a '/', not a longer host or path name.
    assert problems(path, _allow(right.fingerprint, url="https://repo.example.org/cvm"))
    assert problems(path, _allow(right.fingerprint, url="https://repo.example.org.evil"))
    assert load_recipe(path, _allow(right.fingerprint, url=URL)).repositories
    # lint, reviewing the merge request, reports the same refusal at its place.
    result = lint_recipe(path, BuildLimits(), None)
    assert not result.ok
    assert any("is not allowed by this build host" in f.message for f in result.findings)


def test_extends_merges_repositories_by_name(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    fpr = keys[0].fingerprint
    write(
        tmp_path,
        "base.yaml",
        MINIMAL
        + f"""\
repositories:
  - {{name: cvmfs, url: {URL}, suites: [old], key: {{fingerprint: {fpr}}}}}
  - {{name: apptainer, url: {URL}/apptainer, suites: [stable], key: {{fingerprint: {fpr}}}}}
""",
    )
    path = write(
        tmp_path,
        "wn.yaml",
        f"""\
extends: base.yaml
name: wn
version: "2"
repositories:
  - {{name: cvmfs, url: {URL}, suites: [bookworm-prod], key: {{fingerprint: {fpr}}}}}
  - {{name: extra, url: {URL}/extra, suites: [stable], key: {{fingerprint: {fpr}}}}}
""",
    )
    recipe = load_recipe(path, _allow(fpr))
    assert [(r.name, r.suites) for r in recipe.repositories] == [
        ("cvmfs", ("bookworm-prod",)),
        ("apptainer", ("stable",)),
        ("extra", ("stable",)),
    ]


def test_a_repository_for_another_architecture_is_refused(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    fpr = keys[0].fingerprint
    path = write(
        tmp_path,
        "wn.yaml",
        MINIMAL + f"repositories:\n  - name: cvmfs\n    url: {URL}\n    suites: [stable]\n"
        f"    key: {{fingerprint: {fpr}}}\n    arch: [aarch64, amd64]\n",
    )
    assert problems(path, _allow(fpr)) == [
        f"{path}:10:11: .repositories[0].arch: repository 'cvmfs' serves aarch64,"
        " not the image's x86_64",
        f"{path}:10:21: .repositories[0].arch[1]: expected one of x86_64, i386, aarch64;"
        " found 'amd64' (did you mean 'x86_64'?)",
    ]


def test_a_file_may_not_replace_a_repositorys_key_or_sources(
    tmp_path: Path, keys: tuple[SigningKey, SigningKey]
) -> None:
    fpr = keys[0].fingerprint
    path = write(
        tmp_path,
        "wn.yaml",
        MINIMAL
        + "repositories:\n"
        + f"  - {{name: cvmfs, url: {URL}, suites: [s], key: {{fingerprint: {fpr}}}}}\n"
        "files:\n  - {path: /etc/apt/keyrings/cvmfs.gpg, content: x}\n"
        "  - {path: /etc/apt/sources.list.d/cvmfs.sources, content: x}\n"
        "  - {path: /etc/apt/keyrings/other.gpg, content: x}\n",
    )
    found = problems(path, _allow(fpr))
    assert [p.split(": ", 2)[1:] for p in found] == [
        [
            ".files[0].path",
            "'/etc/apt/keyrings/cvmfs.gpg' is where repository 'cvmfs' keeps its pinned key or"
            " sources; a file may not replace it (the repository's key is the one its `key`"
            " pins: change it there)",
        ],
        [
            ".files[1].path",
            "'/etc/apt/sources.list.d/cvmfs.sources' is where repository 'cvmfs' keeps its pinned"
            " key or sources; a file may not replace it (the repository's key is the one its"
            " `key` pins: change it there)",
        ],
    ]
