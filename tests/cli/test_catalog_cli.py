"""The catalog and store commands: each one, --json, errors without tracebacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.cli import main
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from tests.catalog.world import World
from tests.fakes.imagedirs import make_image
from tests.store.httpserver import Server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> World:
    from imagefactory.catalog.repo import Catalog

    code, out, _ = run(
        capsys,
        "--json",
        "catalog",
        "init",
        str(tmp_path / "catalog"),
        "--expires",
        "timestamp=2,snapshot=7",
    )
    assert code == EXIT_OK
    assert Path(json.loads(out)["root"]).is_file()
    assert Path(json.loads(out)["page"]) == tmp_path / "catalog" / "index.html"
    world = World(tmp_path, Catalog(tmp_path / "catalog"))
    world.vo_key("atlas")
    return world


@pytest.fixture
def server(world: World) -> Iterator[Server]:
    server = Server(world.catalog.directory).start()
    yield server
    server.stop()


def _pull(
    capsys: pytest.CaptureFixture[str], world: World, where: str, *extra: str
) -> tuple[int, str, str]:
    return run(
        capsys,
        "--json",
        "pull",
        "--catalog",
        where,
        "--root",
        str(world.catalog.metadata_dir / "root.json"),
        "--policy",
        str(world.policy_path),
        "--store",
        str(world.store),
        "-q",
        *extra,
    )


def test_publish_list_pull_over_http_and_store_commands(
    world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = str(world.catalog.directory)
    code, out, _ = run(capsys, "--json", "publish", str(world.image()), "--catalog", catalog, "-q")
    assert code == EXIT_OK
    assert json.loads(out)["target"] == "atlas/atlas-wn/1.0.json"
    code, out, _ = run(capsys, "--json", "catalog", "list", "--catalog", catalog)
    assert [i["name"] for i in json.loads(out)["images"]] == ["atlas-wn"]
    code, out, _ = _pull(capsys, world, server.url, "--select", "vo=atlas")
    assert code == EXIT_OK
    assert json.loads(out)["events"][0]["action"] == "installed"
    code, out, _ = run(capsys, "--json", "store", "list", "--store", str(world.store))
    assert [e["image"] for e in json.loads(out)] == ["atlas/atlas-wn/1.0"]
    code, out, _ = run(capsys, "store", "export", "--to", "image-list", "--store", str(world.store))
    assert json.loads(out)["hv:imagelist"]["hv:images"][0]["hv:image"]["hv:version"] == "1.0"


def test_revoke_refresh_and_delegate(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = str(world.catalog.directory)
    run(capsys, "publish", str(world.image()), "--catalog", catalog, "-q")
    code, out, _ = run(
        capsys,
        "catalog",
        "revoke",
        "atlas-wn",
        "1.0",
        "--reason",
        "bad kernel",
        "--catalog",
        catalog,
    )
    assert code == EXIT_OK
    assert "revoked (bad kernel)" in out
    code, out, _ = run(capsys, "--json", "catalog", "refresh", "--catalog", catalog)
    assert code == EXIT_OK
    assert json.loads(out)["version"] >= 4
    key = world.vo_key("cms")
    code, out, _ = run(
        capsys, "--json", "catalog", "delegate", "cms", "--key", f"{key}.pub", "--catalog", catalog
    )
    assert code == EXIT_OK
    assert json.loads(out)["role"] == "vo.cms"
    code, out, _ = run(
        capsys,
        "--json",
        "publish",
        str(world.image("cms-wn", vo="cms")),
        "--catalog",
        catalog,
        "--key",
        str(key),
        "-q",
    )
    assert code == EXIT_OK
    assert json.loads(out)["role"] == "vo.cms"


def test_rotate_key_and_prune(
    world: World, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = str(world.catalog.directory)
    pinned = world.root.parent / (world.root.name + "-pinned-root.json")
    pinned.write_bytes(world.root_json)
    run(capsys, "publish", str(world.image()), "--catalog", catalog, "-q")
    code, out, _ = run(capsys, "catalog", "rotate-key", "timestamp", "--catalog", catalog)
    assert code == EXIT_OK
    assert "timestamp key rotated" in out
    assert "root version 2" in out
    code, out, _ = run(capsys, "--json", "catalog", "rotate-key", "root", "--catalog", catalog)
    assert code == EXIT_OK
    assert json.loads(out)["root_version"] == 3
    assert "verified against root version 3" in (world.catalog.directory / "index.html").read_text(
        encoding="utf-8"
    )
    # The page made from the first root follows the rotations as a site does.
    code, out, _ = run(capsys, "catalog", "render", catalog, "--root", str(pinned))
    assert code == EXIT_OK, out
    code, out, _ = run(capsys, "--json", "catalog", "prune", "--keep", "1", "--catalog", catalog)
    assert code == EXIT_OK
    assert json.loads(out)["metadata"]
    assert not json.loads(out)["images"]
    # A site that pinned the first root still pulls over HTTP through the rotations.
    code, out, _ = run(
        capsys,
        "--json",
        "pull",
        "--catalog",
        server.url,
        "--root",
        str(pinned),
        "--policy",
        str(world.policy_path),
        "--store",
        str(world.store),
        "-q",
    )
    assert code == EXIT_OK, out
    assert json.loads(out)["events"][0]["action"] == "installed"
    code, out, err = run(capsys, "catalog", "rotate-key", "vo.atlas", "--catalog", catalog)
    assert code != EXIT_OK
    assert "invalid choice" in err


def test_a_refused_image_makes_pull_exit_1(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "publish",
        str(world.image(signer_vo="cms")),
        "--catalog",
        str(world.catalog.directory),
        "-q",
    )
    code, out, _ = _pull(capsys, world, str(world.catalog.directory))
    assert code == EXIT_VERDICT
    assert json.loads(out)["ok"] is False


def test_publish_and_revoke_write_the_page_and_render_rewrites_it(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = world.catalog.directory
    page = catalog / "index.html"
    code, out, _ = run(capsys, "--json", "publish", str(world.image()), "--catalog", str(catalog))
    assert code == EXIT_OK
    assert json.loads(out)["page"] == str(page)
    text = page.read_text(encoding="utf-8")
    assert "atlas-wn" in text
    assert "st st-revoked" not in text
    code, out, _ = run(
        capsys, "catalog", "revoke", "atlas-wn", "1.0", "--reason", "bad <kernel>", "--catalog",
        str(catalog),
    )  # fmt: skip
    assert code == EXIT_OK
    assert f"{page}: the catalog page" in out
    text = page.read_text(encoding="utf-8")
    assert "st st-revoked" in text
    assert "bad &lt;kernel&gt;" in text
    page.unlink()
    code, out, _ = run(capsys, "--json", "catalog", "render", str(catalog))
    assert code == EXIT_OK
    doc = json.loads(out)
    assert doc["page"] == str(page)
    assert page.is_file()
    assert [(i["name"], i["status"], i["reason"]) for i in doc["images"]] == [
        ("atlas-wn", "revoked", "bad <kernel>")
    ]
    elsewhere = tmp_path / "www" / "catalog.html"
    elsewhere.parent.mkdir()
    root = catalog / "metadata" / "root.json"
    code, out, _ = run(
        capsys, "catalog", "render", str(catalog), "--out", str(elsewhere), "--root", str(root)
    )
    assert code == EXIT_OK
    assert out == f"{elsewhere}: 1 image versions (1 revoked) of catalog version 3\n"


def test_no_page_leaves_the_page_as_it_was_until_one_render(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bulk publishing: --no-page on every change, then one catalog render at the end."""
    catalog = world.catalog.directory
    page = catalog / "index.html"
    before = page.read_bytes()  # the empty catalog's page, from init
    stat = page.stat()
    code, out, _ = run(
        capsys, "--json", "publish", str(world.image()), "--catalog", str(catalog), "--no-page"
    )
    assert code == EXIT_OK
    assert json.loads(out)["page"] is None
    code, out, _ = run(
        capsys, "publish", str(world.image("atlas-wn", "1.1")), "--catalog", str(catalog),
        "--no-page", "-q",
    )  # fmt: skip
    assert code == EXIT_OK
    assert f"{page}: not re-written (--no-page)" in out
    assert f"'imagefactory catalog render {catalog}'" in out
    code, out, _ = run(
        capsys, "catalog", "revoke", "atlas-wn", "1.0", "--reason", "bad kernel", "--catalog",
        str(catalog), "--no-page",
    )  # fmt: skip
    assert code == EXIT_OK
    assert "not re-written (--no-page)" in out
    for argv in (
        ["catalog", "refresh", "--catalog", str(catalog), "--no-page"],
        ["catalog", "rotate-key", "snapshot", "--catalog", str(catalog), "--no-page"],
    ):
        code, out, _ = run(capsys, "--json", *argv)
        assert code == EXIT_OK, argv
        assert json.loads(out)["page"] is None, argv
    # Nothing touched the page: the same file, the same bytes.
    assert page.read_bytes() == before
    assert (page.stat().st_ino, page.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert "atlas-wn" not in before.decode("utf-8")

    code, out, _ = run(capsys, "--json", "catalog", "render", str(catalog))
    assert code == EXIT_OK
    doc = json.loads(out)
    assert sorted((i["version"], i["status"]) for i in doc["images"]) == [
        ("1.0", "revoked"),
        ("1.1", "valid"),
    ]
    text = page.read_text(encoding="utf-8")
    assert "bad kernel" in text
    assert "st st-revoked" in text
    # Without --no-page the next change writes it again, as before.
    code, out, _ = run(capsys, "--json", "catalog", "refresh", "--catalog", str(catalog))
    assert code == EXIT_OK
    assert json.loads(out)["page"] == str(page)


def test_catalog_init_no_page_writes_no_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = tmp_path / "bulk"
    code, out, _ = run(capsys, "catalog", "init", str(where), "--no-page")
    assert code == EXIT_OK
    assert f"{where / 'index.html'}: not re-written (--no-page)" in out
    assert not (where / "index.html").exists()
    code, out, _ = run(capsys, "catalog", "render", str(where))
    assert code == EXIT_OK
    assert out.startswith(f"{where / 'index.html'}: 0 image versions")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["catalog", "render", "{tmp}/nothing"], "not a catalog"),
        (["catalog", "render", "{catalog}", "--out", "{tmp}"], "is a directory"),
        (["catalog", "render", "{catalog}", "--root", "{policy}"], "pinned root"),
        (["catalog", "render", "{catalog}", "--root", "{tmp}/no.json"], "no such file"),
        (["publish", "{unsigned}", "--catalog", "{catalog}"], "no attestation"),
        (["catalog", "list", "--catalog", "{tmp}/nothing"], "not a catalog"),
        (["catalog", "init", "{catalog}"], "already a catalog"),
        (["catalog", "init", "{tmp}/c2", "--expires", "timestamp=soon"], "ROLE=DAYS"),
        (
            ["catalog", "revoke", "x", "1", "--reason", "r", "--catalog", "{catalog}"],
            "not in the catalog",
        ),
        (
            [
                "pull",
                "--catalog",
                "{tmp}/nothing",
                "--root",
                "{root}",
                "--policy",
                "{policy}",
                "--store",
                "{tmp}/s",
            ],
            "not found",
        ),
        (
            [
                "pull",
                "--catalog",
                "{catalog}",
                "--root",
                "{root}",
                "--policy",
                "{policy}",
                "--store",
                "{tmp}/s",
                "--select",
                "colour=red",
            ],
            "unknown key 'colour'",
        ),
        (
            [
                "pull",
                "--catalog",
                "ftp://x/y",
                "--root",
                "{root}",
                "--policy",
                "{policy}",
                "--store",
                "{tmp}/s",
            ],
            "unsupported catalog location",
        ),
        (
            [
                "pull",
                "--catalog",
                "{catalog}",
                "--root",
                "{policy}",
                "--policy",
                "{policy}",
                "--store",
                "{tmp}/s",
            ],
            "pinned root",
        ),
    ],
)
def test_bad_input_is_a_clear_error(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    values = {
        "catalog": str(world.catalog.directory),
        "tmp": str(tmp_path),
        "root": str(world.catalog.metadata_dir / "root.json"),
        "policy": str(world.policy_path),
        "unsigned": str(make_image(tmp_path / "u", "x")),
    }
    code, _, err = run(capsys, *[a.format(**values) for a in argv])
    assert code in (EXIT_VERDICT, EXIT_ERROR)
    assert ("\n" + err).count("\nerror: ") == 1
    assert message in err
