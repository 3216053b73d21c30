"""A real build that installs a package from a third-party repository made by the test.

The repository (a ``hello-wn`` package built with dpkg-deb, indexed with
apt-ftparchive, signed with a fresh ed25519 key) is served on 127.0.0.1 by a
server in this process. The build verifies it on the host with the pinned key,
then apt inside diskimage-builder's chroot (same network namespace, so it
reaches 127.0.0.1) installs ``hello-wn`` from it with only that key trusted.
The finished image is read back with libguestfs and its SBOM, whose components
say which verified index each package came from.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from packageurl import PackageURL

from imagefactory.builder.context import BuildOptions
from imagefactory.builder.pipeline import build
from imagefactory.errors import ArchiveError
from imagefactory.guest.handle import open_guest
from imagefactory.host.accel import choose_guest_accel
from imagefactory.pgpkey import read_public_key
from imagefactory.progress import Progress
from imagefactory.recipe import RepositoryAllowance, load_recipe
from imagefactory.settings import Settings
from tests.fakes.aptrepo import (
    PACKAGE,
    PACKAGE_FILE,
    PACKAGE_TEXT,
    PACKAGE_VERSION,
    SUITE,
    SigningKey,
    build_deb,
    make_key,
    make_repository,
)
from tests.integration_images import REPO, archive_refused
from tests.store.httpserver import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[tuple[Server, SigningKey]]:
    key = make_key(tmp_path / "gnupg")
    make_repository(tmp_path / "repo", key, [build_deb(tmp_path)])
    server = Server(tmp_path / "repo").start()
    try:
        yield server, key
    finally:
        server.stop()
        key.stop()


def test_a_package_from_a_pinned_repository_is_installed(
    repository: tuple[Server, SigningKey], build_settings: Settings, tmp_path: Path
) -> None:
    server, key = repository
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "test-repo.asc").write_bytes(key.export())
    (recipes / "wn.yaml").write_text(
        "name: repo-wn\n"
        'version: "1.0"\n'
        "extends: site-base-debian12.yaml\n"
        f"packages: [{PACKAGE}]\n"
        "repositories:\n"
        "  - name: test-repo\n"
        f"    url: {server.url}\n"
        f"    suites: [{SUITE}]\n"
        "    components: [main]\n"
        f"    key: {{file: test-repo.asc, fingerprint: {key.fingerprint}}}\n"
    )
    settings = dataclasses.replace(
        build_settings,
        include_roots=(REPO / "recipes",),
        allowed_repositories=(RepositoryAllowance(server.url, frozenset({key.fingerprint})),),
    )
    recipe = load_recipe(recipes / "wn.yaml", settings.build_limits())
    options = BuildOptions(use_cache=True, boot_test=False)
    try:
        result = build(recipe, settings, options, Progress(stream=io.StringIO()), tmp_path / "out")
    except ArchiveError as exc:
        archive_refused(exc, settings)
        raise
    # apt in the chroot fetched the signed index and the package from 127.0.0.1.
    fetched = [path for path, _range in server.requests]
    assert f"/dists/{SUITE}/InRelease" in fetched
    assert any(path.endswith(f"{PACKAGE}_{PACKAGE_VERSION}_all.deb") for path in fetched)

    record = result.record
    [repo] = record["repositories"]
    assert (repo["name"], repo["url"], repo["fingerprint"]) == (
        "test-repo",
        server.url,
        key.fingerprint,
    )
    assert repo["release"][SUITE].startswith("sha256:")
    assert {"name": PACKAGE, "version": PACKAGE_VERSION, "arch": "all"} in record["packages"]

    sbom = json.loads((result.directory / "sbom.cdx.json").read_text())
    [component] = [c for c in sbom["components"] if c["name"] == PACKAGE]
    assert component["version"] == PACKAGE_VERSION
    assert {"name": "imagefactory:role", "value": "requested"} in component["properties"]
    # Where each package came from, matched in the indexes the build verified: this one
    # in the test repository (its purl names the repository), the rest in the archive.
    assert {"name": "imagefactory:origin", "value": "repository:test-repo"} in component[
        "properties"
    ]
    purl = PackageURL.from_string(component["purl"])
    assert purl.qualifiers["repository_url"] == server.url
    origins = {
        c["name"]: [p["value"] for p in c["properties"] if p["name"] == "imagefactory:origin"]
        for c in sbom["components"]
    }
    assert origins["libc6"] == ["archive"]
    assert origins["chrony"] == ["archive"]  # from the site base it extends
    assert all(len(found) == 1 for found in origins.values())
    others = {n: o for n, o in origins.items() if n != PACKAGE and o != ["archive"]}
    assert others == {}, f"packages not matched in the verified archive indexes: {others}"
    repositories = [
        p["value"]
        for p in sbom["metadata"]["component"].get("properties", [])
        if p["name"] == "imagefactory:repository"
    ]
    assert repositories == [f"test-repo {server.url} {key.fingerprint}"]

    # The signed labels name the repository and the one key apt trusts for it.
    labels = json.loads((result.directory / "labels.json").read_text())
    assert labels["repositories"] == [
        {"name": "test-repo", "url": server.url, "fingerprint": key.fingerprint}
    ]

    (disk,) = record["disk"]["files"]
    accel = choose_guest_accel(settings.accel, settings.cache_dir / "accel.json")
    with open_guest(result.directory / disk, "qcow2", readonly=True, accel=accel) as guest:
        assert guest.read(PACKAGE_FILE) == PACKAGE_TEXT.encode()
        sources = guest.read("/etc/apt/sources.list.d/test-repo.sources")
        keyring = guest.read("/etc/apt/keyrings/test-repo.gpg")
    assert sources is not None
    assert f"URIs: {server.url}\n" in sources.decode()
    assert "Signed-By: /etc/apt/keyrings/test-repo.gpg\n" in sources.decode()
    assert keyring == read_public_key(key.export()).binary
