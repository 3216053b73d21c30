"""lint --catalog: a recipe against the version of its image a real catalog publishes.

The catalog is made by the real ``catalog init`` and ``publish`` code and read
through the real TUF client, from a directory and over HTTP on 127.0.0.1.
The published image's SBOM is a real one (``make_sbom``, with package roles).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder.element import install_list
from imagefactory.cli import main
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from imagefactory.guest.facts import OsFacts, Package
from imagefactory.lint.debversion import compare_versions
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.sbom import make_sbom
from tests.catalog.world import World, fresh, make_world
from tests.conftest import RECIPES
from tests.fakes.imagedirs import key_sign, make_image, read_labels, write_labels
from tests.store.httpserver import Server

FACTS = OsFacts("debian", "12", "bookworm", "Debian GNU/Linux 12", "x86_64", "6.1.0", "none")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _vo_repo(tmp_path: Path) -> Path:
    """A VO's recipe repository: the shipped example and its base, the example edited.

    Against the published 0.9 below: ``wget`` dropped, ``bzip2`` new, ``less``
    pinned to a newer version, ``fs_access`` and a free-form label changed.
    """
    repo = tmp_path / "vo-repo"
    shutil.copytree(RECIPES, repo)
    recipe = repo / "atlas-wn-debian12.yaml"
    text = recipe.read_text().replace("  - bzip2\n", "  - bzip2\n  - less=590-2\n")
    recipe.write_text(text.replace("experiment: atlas", "experiment: atlas-run4"))
    return recipe


def _published_packages(recipe: Path) -> list[Package]:
    """What a build of the published 0.9 installed: the same requests, with the differences."""
    requested = [p.partition("=")[0] for p in install_list(load_recipe(recipe, DEFAULT_LIMITS))]
    names = [n for n in dict.fromkeys(requested) if n != "bzip2"] + ["wget", "libc6"]
    return [
        Package(n, "487-0.1" if n == "less" else "1.0-1", "amd64", n, depends=("libc6",))
        for n in names
    ]


def publish_previous(
    world: World, recipe: Path, version: str = "0.9", disk: bytes | None = None
) -> Path:
    """The recipe's image as the catalog publishes it now, with a real SBOM with roles."""
    name = "atlas-wn-debian12"
    edit = fresh(name, version, "atlas")
    image = make_image(world.root / "src", version, edit=edit, disk=disk)
    packages = _published_packages(recipe)
    requested = {p.name for p in packages if p.name != "libc6"}
    sbom = make_sbom(
        name,
        version,
        FACTS,
        packages,
        disk_sha256="0" * 64,
        created=datetime.now(UTC),
        requested=requested,
    )
    (image / "sbom.cdx.json").write_text(sbom, encoding="utf-8")
    labels = read_labels(image)
    labels["sbom"]["sha256"] = hashlib.sha256(sbom.encode()).hexdigest()
    labels["trust"]["fs_access"] = ["none"]
    labels["extra"] = {"experiment": "atlas", "site": "example", "retired": "yes"}
    write_labels(image, labels)
    key_sign(image, world.vo_key("atlas"))
    world.publish(image)
    return image


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.fixture
def server(world: World) -> Iterator[Server]:
    server = Server(world.catalog.directory).start()
    yield server
    server.stop()


def _lint_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "--json", "lint", *argv)
    data = json.loads(out)
    assert isinstance(data, dict)
    return code, data


def test_diff_against_the_published_version_from_a_directory(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe)
    # A local directory is read with its own first root (no --root needed).
    code, data = _lint_json(capsys, str(recipe), "--catalog", str(world.catalog.directory))
    assert code == EXIT_OK, data
    [result] = data["recipes"]
    catalog = result["catalog"]
    assert catalog["published"]["version"] == "0.9"
    assert catalog["published"]["sbom"] is True
    packages = catalog["packages"]
    assert packages["added"] == ["bzip2"]
    assert packages["removed"] == ["wget"]
    assert packages["versions"] == [
        {"package": "less", "old": "487-0.1", "new": "590-2", "change": "upgraded"}
    ]
    assert "libc6" not in json.dumps(packages)  # a dependency, not requested: not compared
    assert "python3-minimal" in packages["unchanged"]
    changes = {c["label"]: (c["old"], c["new"]) for c in catalog["labels"]}
    assert changes["trust.fs_access"] == ("none", "nfs")
    assert changes["extra.experiment"] == ("atlas", "atlas-run4")
    assert changes["extra.retired"] == ("yes", None)
    assert changes["image.version"] == ("0.9", "1.0")
    assert changes["image.lifetime"] == ("29d", "30d")
    assert "os.distro" not in changes  # the same in both
    assert "image.created" not in changes  # differs on every build: not a change


def test_markdown_findings_then_labels_old_to_new_then_packages(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe, version="1.0")  # the recipe's own version: already out
    code, out, _ = run(
        capsys,
        "lint",
        str(recipe),
        "--catalog",
        str(world.catalog.directory),
        "--format",
        "markdown",
    )
    assert code == EXIT_VERDICT
    finding = out.index("catalog-version-published")
    labels = out.index("| label | published 1.0 | this recipe | |")
    packages = out.index("**Requested packages** against 1.0:")
    assert finding < labels < packages
    assert "| trust.fs\\_access | none | nfs | changed |" in out
    assert "| os.distro | debian | debian |  |" in out
    assert "| less | 487-0.1 | 590-2 | upgraded |" in out
    assert "| bzip2 | - | requested | added |" in out
    assert "| wget | 1.0-1 | - | removed |" in out


def test_a_lower_version_than_published_is_refused(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe, version="1.10")
    code, data = _lint_json(capsys, str(recipe), "--catalog", str(world.catalog.directory))
    assert code == EXIT_VERDICT
    codes = [f["code"] for f in data["recipes"][0]["findings"]]
    assert codes == ["catalog-version-lower"]


def test_over_http_with_a_pinned_root_and_never_the_disk(
    tmp_path: Path, world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe)
    root = tmp_path / "root.json"
    root.write_bytes(world.root_json)
    code, out, _ = run(capsys, "lint", str(recipe), "--catalog", server.url, "--root", str(root))
    assert code == EXIT_OK, out
    assert "against 0.9 published in" in out
    assert "package added: bzip2" in out
    assert "package upgraded: less 487-0.1 -> 590-2" in out
    fetched = [path for path, _ in server.requests]
    assert any(p.endswith("/sbom.cdx.json") for p in fetched)
    assert not any(p.endswith((".raw", ".qcow2")) for p in fetched), fetched


def test_a_url_needs_a_pinned_root(
    tmp_path: Path, world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    code, out, _ = run(capsys, "--json", "lint", str(recipe), "--catalog", server.url)
    assert code == EXIT_VERDICT
    error = json.loads(out)["error"]
    assert "needs --root" in error["message"]
    assert server.requests == []


def test_a_foreign_root_is_refused(
    tmp_path: Path, world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    other = make_world(tmp_path / "other")
    root = tmp_path / "foreign-root.json"
    root.write_bytes(other.root_json)
    code, out, _ = run(
        capsys, "--json", "lint", str(recipe), "--catalog", server.url, "--root", str(root)
    )
    assert code == EXIT_VERDICT
    assert json.loads(out)["error"]["type"] == "CatalogRefusedError"


def test_an_sbom_that_is_not_what_the_catalog_signed_is_refused(
    tmp_path: Path, world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe)
    [sbom] = world.catalog.directory.glob("images/atlas/atlas-wn-debian12/0.9/sbom.cdx.json")
    sbom.chmod(0o644)
    sbom.write_text(sbom.read_text().replace("487-0.1", "999-0.1"))
    root = tmp_path / "root.json"
    root.write_bytes(world.root_json)
    code, out, _ = run(
        capsys, "--json", "lint", str(recipe), "--catalog", server.url, "--root", str(root)
    )
    assert code == EXIT_ERROR
    assert "is not the signed" in json.loads(out)["error"]["message"]


def test_an_image_not_yet_published_is_new(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    code, out, _ = run(
        capsys,
        "lint",
        str(recipe),
        "--catalog",
        str(world.catalog.directory),
        "--format",
        "markdown",
    )
    assert code == EXIT_OK
    assert "yet: a new image." in out
    assert "| os.distro | debian |" in out


def test_root_without_catalog_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "lint", str(RECIPES / "atlas-wn-debian12.yaml"), "--root", "x")
    assert code == EXIT_ERROR
    assert "--root is the pinned root of --catalog" in err


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("1.0", "1.0", 0),
        ("1.0~rc1", "1.0", -1),
        ("1:0.1", "2.0", 1),
        ("2.36.1-8+deb12u1", "2.36.1-8", 1),
        ("590-2", "487-0.1", 1),
        ("1.2a", "1.2+", -1),
        ("10", "9", 1),
    ],
)
def test_debian_version_order(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want
    assert compare_versions(b, a) == -want


def test_a_revoked_version_is_not_the_published_one(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagefactory.catalog.ops import revoke

    recipe = _vo_repo(tmp_path)
    publish_previous(world, recipe, version="0.8")
    publish_previous(world, recipe, version="0.9")
    revoke(world.catalog, "atlas-wn-debian12", "0.9", "broken sshd config")
    code, data = _lint_json(capsys, str(recipe), "--catalog", str(world.catalog.directory))
    assert code == EXIT_OK
    assert data["recipes"][0]["catalog"]["published"]["version"] == "0.8"


def test_an_sbom_without_roles_gives_labels_but_no_package_diff(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _vo_repo(tmp_path)
    world.publish(world.image("atlas-wn-debian12", "0.9"))  # the fake SBOM: no roles
    code, data = _lint_json(capsys, str(recipe), "--catalog", str(world.catalog.directory))
    assert code == EXIT_OK  # a warning
    [result] = data["recipes"]
    assert [f["code"] for f in result["findings"]] == ["catalog-sbom-no-roles"]
    assert result["catalog"]["packages"]["added"] == []
    assert result["catalog"]["labels"]  # the labels are still compared
    _, out, _ = run(
        capsys,
        "lint",
        str(recipe),
        "--catalog",
        str(world.catalog.directory),
        "--format",
        "markdown",
    )
    assert "marks no package roles: no package diff." in out
