"""The example image, really built, signed with a local key and verified
against a site policy that also asks for a fresh libguestfs inspection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from imagefactory.builder.pipeline import BuildResult
from imagefactory.cli import main
from imagefactory.errors import EXIT_OK, EXIT_VERDICT

pytestmark = pytest.mark.integration


def _copy_image_dir(source: Path, target: Path) -> Path:
    """A private copy of an image directory (the disk hard-linked: no 900 MB copy)."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.suffix in (".qcow2", ".raw"):
            os.link(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
    return target


def _policy(directory: Path, *, inspect: bool) -> Path:
    rules = {
        "signers": [{"name": "atlas-vo", "key": "vo-key.pub"}],
        "threshold": 1,
        "distros": ["debian"],
        "releases": ["12"],
        "arches": ["x86_64"],
        "models": ["non-persistent"],
        "root_policies": {"non-persistent": ["none"]},
        "max_age": "30d",
        "require_expiry": True,
        "require_audit": True,
        "inspect": inspect,
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump({"formats": ["qcow2"], "vos": {"atlas": rules}}))
    return path


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["key", "generate", str(tmp_path / "vo-key")]) == EXIT_OK
    capsys.readouterr()
    return tmp_path


def test_signed_example_is_allowed_after_a_fresh_inspection(
    example_build: BuildResult, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _copy_image_dir(example_build.directory, site / "image")
    assert main(["sign", str(image), "--key", str(site / "vo-key")]) == EXIT_OK
    policy = _policy(site, inspect=True)
    capsys.readouterr()
    assert main(["verify", "--json", str(image), "--policy", str(policy)]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["allowed"] is True
    (verdict,) = result["images"]
    assert "inspection" in verdict["steps"]


def test_labels_that_lie_about_the_disk_are_caught_by_the_inspection(
    example_build: BuildResult, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signer who signs false labels: signatures pass, the disk itself does not."""
    image = _copy_image_dir(example_build.directory, site / "image")
    labels = json.loads((image / "labels.json").read_text())
    labels["os"]["kernel"] = "6.99.0-1-amd64"
    (image / "labels.json").write_text(json.dumps(labels, indent=2))
    assert main(["sign", str(image), "--key", str(site / "vo-key")]) == EXIT_OK
    capsys.readouterr()
    without = _policy(site, inspect=False)
    assert main(["verify", "-q", str(image), "--policy", str(without)]) == EXIT_OK
    capsys.readouterr()
    policy = _policy(site, inspect=True)
    assert main(["verify", "--json", str(image), "--policy", str(policy)]) == EXIT_VERDICT
    (verdict,) = json.loads(capsys.readouterr().out)["images"]
    denials = [r for r in verdict["reasons"] if r["severity"] != "note"]
    assert {r["code"] for r in denials} == {"inspection-mismatch"}
    assert any("os.kernel" in r["message"] for r in denials)
