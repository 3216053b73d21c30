"""The example image, really built: signed, pushed to a real registry, published,
pulled over HTTP into a store, and allowed by the gate from that store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagefactory.builder.pipeline import BuildResult
from imagefactory.cli import main
from imagefactory.errors import EXIT_OK
from imagefactory.gate.check import GateConfig, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.trust import load_policy
from tests.catalog.registry import registry  # noqa: F401 -- the fixture
from tests.store.httpserver import Server

pytestmark = pytest.mark.integration


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    result: dict[str, Any] = json.loads(out) if out.strip().startswith("{") else {}
    return result


def test_example_is_published_pulled_and_allowed_from_the_store(
    example_build: BuildResult,
    tmp_path: Path,
    registry: str,  # noqa: F811 -- the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    for entry in example_build.directory.iterdir():
        if entry.suffix == ".qcow2":
            os.link(entry, image / entry.name)
        elif entry.is_file():
            (image / entry.name).write_bytes(entry.read_bytes())
    _run(capsys, "key", "generate", str(tmp_path / "vo-key"))
    _run(capsys, "sign", str(image), "--key", str(tmp_path / "vo-key"))
    rules = {"signers": [{"name": "atlas-vo", "key": "vo-key.pub"}], "distros": ["debian"]}
    policy = tmp_path / "site.yaml"
    policy.write_text(yaml.safe_dump({"formats": ["qcow2"], "vos": {"atlas": rules}}))
    catalog = tmp_path / "catalog"
    _run(capsys, "catalog", "init", str(catalog))
    published = _run(
        capsys,
        "publish",
        str(image),
        "--catalog",
        str(catalog),
        "--registry",
        f"{registry}/atlas",
        "-q",
    )
    assert published["changed"] is True
    # The catalog's page shows the real image, verified, with its OCI reference and SBOM.
    page = Path(published["page"]).read_text(encoding="utf-8")
    descriptor = published["descriptor"]
    assert descriptor["oci_manifest"] in page
    assert f"images/atlas/{descriptor['name']}/{descriptor['version']}/sbom.cdx.json" in page
    assert '<span class="st st-valid">valid</span>' in page
    server = Server(catalog).start()
    store = tmp_path / "store"
    try:
        pulled = _run(
            capsys,
            "pull",
            "--catalog",
            server.url,
            "--root",
            str(catalog / "metadata" / "root.json"),
            "--policy",
            str(policy),
            "--store",
            str(store),
            "-q",
        )
        again = _run(
            capsys,
            "pull",
            "--catalog",
            server.url,
            "--root",
            str(catalog / "metadata" / "root.json"),
            "--policy",
            str(policy),
            "--store",
            str(store),
            "-q",
        )
        from_registry = _run(
            capsys,
            "pull",
            "--catalog",
            server.url,
            "--root",
            str(catalog / "metadata" / "root.json"),
            "--policy",
            str(policy),
            "--store",
            str(tmp_path / "store2"),
            "--oci",
            "-q",
        )
    finally:
        server.stop()
    assert [e["action"] for e in pulled["events"]] == ["installed"]
    assert again["image_bytes"] == 0
    assert [e["action"] for e in from_registry["events"]] == ["installed"]
    [disk] = store.glob("atlas/atlas-wn-debian12/1.0/*.qcow2")
    result = check_disks(
        [DiskRequest(str(disk), "qcow2", "vda")], GateConfig(load_policy(policy), store)
    )
    assert result.allowed, result.render("example")
    # A batch prologue's select over that store: the real image, by its real labels.
    chosen = _run(
        capsys,
        "select",
        "--store",
        str(store),
        "--policy",
        str(policy),
        "--require",
        "distro=debian,release>=12,arch=x86_64,vo=atlas,root_policy=none,model=non-persistent",
        "--format",
        "classad",
        "--explain",
    )
    assert chosen["image"] == str(store / "atlas" / "atlas-wn-debian12" / "1.0")
    assert chosen["classad"]["ImagefactoryImage"] == chosen["image"]
    assert chosen["classad"]["ImagefactoryFormat"] == "qcow2"
    assert [e["status"] for e in chosen["explain"]] == ["chosen"]
