"""``imagefactory select``: exit codes, the outputs a prologue reads, --explain, --json."""

from __future__ import annotations

import json
from pathlib import Path

import classad2 as classad
import pytest

from imagefactory.cli import main
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.publish(world.image("atlas-wn", "1.0"))
    world.publish(world.image("atlas-wn-big", "2.0", disk=b"\0" * 131072))
    world.publish(world.image("cms-wn", "1.0", vo="cms"))
    assert world.pull().ok
    return world


def select(capsys: pytest.CaptureFixture[str], world: World, *argv: str) -> tuple[int, str, str]:
    code = main(["select", "--store", str(world.store), "--policy", str(world.policy_path), *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_the_chosen_image_directory_is_the_one_line_on_stdout(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = select(
        capsys, world, "--require", "vo=atlas,release>=12,arch=x86_64", "--rank", "smallest"
    )
    assert code == EXIT_OK
    assert out == f"{world.store / 'atlas' / 'atlas-wn' / '1.0'}\n"
    assert err == ""


def test_explain_goes_to_stderr_and_names_every_image(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = select(
        capsys, world, "--require", "vo=atlas", "--rank", "version", "--explain"
    )
    assert code == EXIT_OK
    assert out.strip().endswith("atlas/atlas-wn-big/2.0")
    assert "atlas/atlas-wn-big/2.0: chosen" in err
    assert "atlas/atlas-wn/1.0: outranked" in err
    assert "cms/cms-wn/1.0: no-match" in err
    assert "vo=atlas: the image's vo is cms" in err


def test_no_match_exits_1_with_the_reason_and_json_says_so(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = select(capsys, world, "--require", "arch=aarch64")
    assert code == EXIT_VERDICT
    assert out == ""
    assert "no image in" in err
    assert "3 no-match" in err
    code, out, _ = select(capsys, world, "--json", "--explain", "--require", "arch=aarch64")
    doc = json.loads(out)
    assert code == EXIT_VERDICT
    assert (doc["ok"], doc["exit_code"], doc["image"]) == (False, EXIT_VERDICT, None)
    assert doc["error"]["type"] == "NoImageMatches"
    assert [e["status"] for e in doc["explain"]] == ["no-match"] * 3


def test_a_bad_requirement_is_a_usage_error_exit_2_with_its_column(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = select(capsys, world, "--require", "distro=debian,arhc=x86_64")
    assert code == EXIT_ERROR
    assert "column 15: unknown key 'arhc' (did you mean 'arch'?)" in err
    code, out, _ = select(capsys, world, "--json", "--require", "vo=atlsa")
    doc = json.loads(out)
    assert (doc["ok"], doc["exit_code"]) == (False, EXIT_ERROR)
    assert doc["error"]["problems"][0]["hint"] == "did you mean 'atlas'?"


def test_an_invalid_policy_is_exit_2_not_no_match(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.policy_path.write_text("vos: [\n")
    code, _, err = select(capsys, world)
    assert code == EXIT_ERROR
    assert "error:" in err


def test_json_carries_the_image_its_labels_and_the_counts(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = select(capsys, world, "--json", "--require", "vo=cms")
    doc = json.loads(out)
    assert code == EXIT_OK
    assert doc["ok"] is True
    assert doc["key"] == "cms/cms-wn/1.0"
    assert doc["image"] == str(world.store / "cms" / "cms-wn" / "1.0")
    assert doc["labels"]["os.arch"] == "x86_64"
    assert doc["labels"]["vo"] == ["cms"]
    assert doc["counts"] == {"chosen": 1, "no-match": 2}
    assert "explain" not in doc


def test_classad_output_is_a_machine_ad_htcondor_reads(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = select(capsys, world, "--require", "vo=cms", "--format", "classad")
    assert code == EXIT_OK
    ad = classad.parseOne(out, classad.ParserType.Old)
    assert ad["ImagefactoryImage"] == str(world.store / "cms" / "cms-wn" / "1.0")
    assert ad["ImagefactoryVOs"] == "cms"
    code, out, _ = select(capsys, world, "--json", "--require", "vo=cms", "--format", "classad")
    assert json.loads(out)["classad"]["ImagefactoryReleaseMajor"] == 12


def test_classad_requirements_is_the_jobs_expression_without_reading_the_store(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "select",
            "--store",
            str(tmp_path / "no-store-needed"),
            "--policy",
            str(world.policy_path),
            "--require",
            "vo=atlas,release>=12",
            "--format",
            "classad-requirements",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    expression = classad.ExprTree(out.strip())
    ad = classad.parseOne(
        'ImagefactoryVOs = "atlas"\nImagefactoryReleaseMajor = 13\nImagefactoryReleaseMinor = 0\n',
        classad.ParserType.Old,
    )
    assert expression.eval(ad) is True


def test_glance_output_feeds_openstack_image_create(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = select(capsys, world, "--require", "vo=cms", "--format", "glance")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[:2] == ["--disk-format raw", "--container-format bare"]
    assert "--property architecture=x86_64" in lines
    assert "--property os_distro=debian" in lines
    code, out, _ = select(capsys, world, "--json", "--require", "vo=cms", "--format", "glance")
    glance = json.loads(out)["glance"]
    assert glance["properties"]["hw_firmware_type"] == "bios"
    assert glance["disk_format"] == "raw"


def test_a_missing_store_is_exit_2(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["select", "--store", str(world.root / "nowhere"), "--policy", str(world.policy_path)]
    )
    _, err = capsys.readouterr()
    assert code == EXIT_ERROR
    assert "no such directory" in err
