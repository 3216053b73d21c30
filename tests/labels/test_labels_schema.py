"""labels.json: made from observed facts, validated against the versioned schema,
vocabularies generated from imagefactory/vocab.py (one source of truth)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from imagefactory.data import LABELS_DIR
from imagefactory.errors import LabelError
from imagefactory.labels.exports import image_list_entry, oci_annotations
from imagefactory.labels.make import write_labels
from imagefactory.model import labelschema as labels_schema
from imagefactory.model.labels import Labels
from imagefactory.model.labelschema import VOCABULARIES, validate_labels
from imagefactory.model.labelschema import labels_schema as generate
from imagefactory.sbom import SBOM_FILE
from tests.labels.labels_helpers import REPO, labels_for, recipe


def test_schema_file_is_generated_from_vocab_py(tmp_path: Path) -> None:
    written = labels_schema.write_files(tmp_path)
    for path in written:
        shipped = LABELS_DIR / path.relative_to(tmp_path)
        assert shipped.read_text() == path.read_text(), (
            f"{shipped} is stale: run python -m imagefactory.model.labelschema"
        )
    assert {p.stem for p in (REPO / "labels" / "vocab").glob("*.json")} == set(VOCABULARIES)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(generate())


def test_vocabularies_match_the_contract() -> None:
    vocab = {
        n: json.loads((REPO / "labels" / "vocab" / f"{n}.json").read_text()) for n in VOCABULARIES
    }
    assert vocab["distro"] == ["debian", "ubuntu"]
    assert vocab["arch"] == ["x86_64", "i386", "aarch64"]
    assert vocab["root_policy"] == ["none", "site-admin", "user"]
    assert vocab["model"] == ["persistent", "non-persistent", "library", "user-defined"]
    assert vocab["format"] == ["qcow2", "raw"]
    assert vocab["boot_mode"] == ["bios", "uefi"]
    assert vocab["contextualisation"] == ["none", "cloud-init"]
    assert {"none", "nfs", "dcap", "rfio"} <= set(vocab["fs_access"])


def test_labels_are_made_from_observed_facts_and_declared_values() -> None:
    labels, _ = labels_for(recipe())
    assert labels["schema"] == "urn:imagefactory:labels:v1"
    assert labels["os"] == {
        "distro": "debian",
        "version": "12",
        "codename": "bookworm",
        "arch": "x86_64",
        "kernel": "6.1.0-28-amd64",
    }
    assert labels["vo"] == ["atlas"]
    assert labels["trust"] == {
        "model": "non-persistent",
        "root_policy": "none",
        "fs_access": ["nfs"],
        "contextualisation": "none",
    }
    assert labels["endorser"] == {"contact": "atlas-images@example.org"}
    assert labels["image"]["created"] == "2026-11-25T09:00:00Z"
    assert labels["image"]["expires"] == "2026-12-25T09:00:00Z"
    assert labels["packages"]["count"] == 2
    assert labels["audit"]["passed"] is True
    assert labels["audit"]["failed"] == []
    assert labels["audit"]["profile"] == "worker-node-default"
    assert labels["extra"] == {"experiment": "atlas", "site": "example"}
    assert labels["recipe"]["digest"] == recipe().digest


def test_the_same_disk_gets_the_same_uuid() -> None:
    a, _ = labels_for(recipe())
    b, _ = labels_for(recipe())
    assert a["image"]["uuid"] == b["image"]["uuid"]


def test_an_image_other_than_the_recipe_says_is_an_error() -> None:
    from tests.fakes.guest import unhardened_tree

    g = unhardened_tree()
    g.add("/etc/os-release", 'ID=ubuntu\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n')
    with pytest.raises(LabelError) as exc:
        labels_for(recipe(), g)
    assert "distro: recipe says debian, image has ubuntu" in exc.value.message
    assert "version: recipe says 12, image has 24.04" in exc.value.message


def _broken(change: str) -> dict[str, Any]:
    labels, _ = labels_for(recipe())
    bad = copy.deepcopy(labels)
    if change == "enum":
        bad["trust"]["root_policy"] = "root-for-all"
    elif change == "missing":
        del bad["disk"]["sha512"]
    elif change == "extra":
        bad["disk"]["backing_file"] = "/etc/shadow"
    elif change == "hex":
        bad["disk"]["sha256"] = "<hex>"
    elif change == "user-root-nfs":
        bad["trust"]["root_policy"] = "user"
    elif change == "time":
        bad["image"]["expires"] = "next month"
    return bad


@pytest.mark.parametrize("change", ["enum", "missing", "extra", "hex", "user-root-nfs", "time"])
def test_schema_refuses_bad_labels(change: str) -> None:
    with pytest.raises(LabelError) as exc:
        validate_labels(_broken(change))
    assert exc.value.hint


def test_sbom_is_valid_cyclonedx_with_package_urls() -> None:
    labels, sbom = labels_for(recipe())
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    data = json.loads(sbom)
    purls = sorted(c["purl"] for c in data["components"])
    assert purls == [
        "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64&distro=debian-12",
    ]
    assert data["metadata"]["timestamp"].startswith("2026-11-25T09:00:00")
    assert labels["sbom"]["file"] == SBOM_FILE
    assert labels["sbom"]["spec_version"] == "1.6"


def test_exports() -> None:
    labels, _ = labels_for(recipe())
    oci = oci_annotations(Labels(labels))
    assert oci["org.opencontainers.image.title"] == "atlas-wn-debian12"
    assert oci["org.opencontainers.image.version"] == "1.0"
    assert oci["org.opencontainers.image.created"] == "2026-11-25T09:00:00Z"
    assert oci["imagefactory.disk.sha512"] == "b" * 128
    assert oci["imagefactory.trust.root-policy"] == "none"
    assert all(isinstance(v, str) for v in oci.values())
    entry = image_list_entry(Labels(labels), uri="file:///srv/images/x.qcow2")["hv:image"]
    assert entry["sl:os"] == "debian"
    assert entry["sl:osversion"] == "12"
    assert entry["sl:arch"] == "x86_64"
    assert entry["ad:vo"] == "atlas"
    assert entry["sl:checksum:sha512"] == "b" * 128
    assert entry["dc:identifier"] == labels["image"]["uuid"]
    assert entry["hv:uri"] == "file:///srv/images/x.qcow2"


def test_labels_round_trip_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagefactory.cli import main

    labels, _ = labels_for(recipe())
    write_labels(tmp_path, labels)
    assert Labels.read(tmp_path).to_dict() == labels
    assert main(["labels", "show", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == labels
    assert main(["labels", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "os.distro" in out
    assert "audit.passed" in out
    assert main(["labels", "export", str(tmp_path), "--to", "image-list"]) == 0
    assert json.loads(capsys.readouterr().out)["hv:image"]["sl:arch"] == "x86_64"
    assert main(["labels", "export", str(tmp_path), "--to", "oci"]) == 0
    assert "org.opencontainers.image.title" in json.loads(capsys.readouterr().out)


def test_labels_show_refuses_invalid_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imagefactory.cli import main

    (tmp_path / "labels.json").write_text(json.dumps(_broken("enum")))
    assert main(["labels", "show", str(tmp_path)]) == 2
    assert "do not match urn:imagefactory:labels:v1" in capsys.readouterr().err
    (tmp_path / "labels.json").write_text("{not json")
    assert main(["labels", "show", str(tmp_path)]) == 2
