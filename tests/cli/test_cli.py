"""The command line: exit codes, --json, errors caught once with their hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagefactory import cli
from imagefactory.errors import UsageError
from tests.conftest import RECIPES

BAD = 'name: wn\nversion: "1"\npakages: [less]\nbase: {distro: debian, release: "12"}\nvo: x\n'


def test_validate_ok_and_invalid_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert cli.main(["validate", str(RECIPES / "atlas-wn-debian12.yaml")]) == 0
    assert ": ok (atlas-wn-debian12 1.0, sha256:" in capsys.readouterr().out
    assert cli.main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:3:1: .pakages: unknown key 'pakages' (did you mean 'packages'?)" in out


def test_validate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert cli.main(["validate", "--json", str(RECIPES / "ubuntu2404.yaml"), str(bad)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert [r["ok"] for r in result["recipes"]] == [True, False]
    problem = result["recipes"][1]["problems"][0]
    assert (problem["line"], problem["column"]) == (3, 1)


def test_usage_error_is_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["biuld"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: imagefactory: argument command: invalid choice: 'biuld'")
    assert "Traceback" not in err


def test_build_of_an_invalid_recipe_stops_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert cli.main(["build", str(bad), "--output", str(tmp_path / "out")]) == 1
    assert "invalid recipe: 1 problem" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_boot_test_refuses_an_unsafe_image_before_qemu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 4092)  # a qcow2 header in a file declared raw
    assert cli.main(["boot-test", str(disk), "--format", "raw"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "qcow2" in err


def test_recipe_show_prints_the_resolved_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["recipe", "show", str(RECIPES / "atlas-wn-debian12.yaml")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["recipe"]["base"]["release"] == "bookworm"
    assert "chrony" in shown["recipe"]["packages"]  # from the site base it extends
    assert shown["digest"].startswith("sha256:")


def test_user_paths_are_absolute_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path argument is resolved once, at the boundary, against the cwd."""
    from imagefactory.builder import pipeline

    seen: dict[str, Path] = {}

    def fake_build(
        recipe: object, settings: object, options: object, progress: object, output_root: Path
    ) -> object:
        seen["output"] = output_root
        raise UsageError("stop here")

    monkeypatch.chdir(RECIPES)
    monkeypatch.setattr(pipeline, "build", fake_build)
    assert cli.main(["build", "atlas-wn-debian12.yaml", "--output", "../out"]) == 2
    assert seen["output"] == RECIPES / "../out"
    parser = cli.build_parser()
    args = parser.parse_args(["verify", "img", "--policy", "p.yaml", "--cache", "c"])
    assert [*args.images, args.policy, args.cache] == [RECIPES / n for n in ("img", "p.yaml", "c")]
    assert cli.main(["key", "generate", ""]) == 2


def test_json_failure_is_a_json_document_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["labels", "show", "--json", str(tmp_path / "absent")]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["exit_code"] == 2
    assert doc["error"]["type"] == "FileAccessError"
    assert "no such file" in doc["error"]["message"]
    # A usage error, before any namespace exists, still answers in JSON.
    assert cli.main(["--json", "biuld"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "UsageError"


def test_cannot_read_a_file_is_exit_2_in_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = str(tmp_path / "absent.yaml")
    for argv in (
        ["validate", absent],
        ["recipe", "show", absent],
        ["build", absent],
        ["policy", "check", absent],
        ["inspect", absent],
        ["boot-test", absent],
        ["labels", "show", absent],
        ["sign", absent, "--key", absent],
        ["verify", absent, "--policy", absent],
    ):
        assert cli.main(argv) == 2, argv
        assert "no such" in capsys.readouterr().err, argv


def test_boot_test_marker_must_be_a_regex(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["boot-test", "--marker", "(", str(tmp_path / "absent.qcow2")]) == 2
    assert "--marker '(' is not a regular expression" in capsys.readouterr().err


def test_build_compress_sets_the_recipes_disk_compress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--compress builds the recipe with disk.compress set; without qcow2 it is refused."""
    from imagefactory.builder import pipeline

    seen: list[object] = []

    def fake_build(recipe: object, *args: object, **kwargs: object) -> object:
        seen.append(recipe)
        raise UsageError("stop here")

    monkeypatch.setattr(pipeline, "build", fake_build)
    recipe = RECIPES / "ubuntu2404.yaml"
    assert cli.main(["build", str(recipe), "--compress", "--output", str(tmp_path)]) == 2
    [built] = seen
    assert built.disk.compress is True  # type: ignore[attr-defined]
    assert built.canonical()["disk"]["compress"] is True  # type: ignore[attr-defined]
    raw_only = tmp_path / "raw.yaml"
    raw_only.write_text(
        'name: wn\nversion: "1"\nbase: {distro: debian, release: "12"}\nvo: ops\n'
        "disk: {formats: [raw]}\n"
    )
    capsys.readouterr()
    assert cli.main(["build", "--json", str(raw_only), "--compress"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["type"] == "UsageError"
    assert doc["error"]["message"] == (
        f"{raw_only}: --compress needs qcow2 in disk.formats (formats: raw);"
        " only a qcow2 has compressed clusters"
    )
    assert len(seen) == 1
