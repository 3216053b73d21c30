"""instantiate, discard, instances and instances gc through the command line (--json too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagefactory import cli
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from tests.instances.conftest import KEY, Site, site

__all__ = ["site"]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = cli.main([*argv, "--json"])
    out, _ = capsys.readouterr()
    doc: dict[str, object] = json.loads(out)
    return code, doc


def _site_args(site: Site) -> list[str]:
    return ["--store", str(site.store), "--policy", str(site.world.policy_path)]


def test_instantiate_prints_the_overlay_and_discard_removes_it(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = ["--run-dir", str(site.run_dir)]
    cache = ["--cache", str(tmp_path / "cache")]
    code = cli.main(
        ["instantiate", str(site.image), "--job", "12345_7", *run, *_site_args(site), *cache]
    )
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert out == f"{site.run_dir / '12345_7' / 'disk.qcow2'}\n"
    code, doc = _json(capsys, "instances", *run)
    assert code == EXIT_OK
    assert [(i["job"], i["image"], i["started"]) for i in doc["instances"]] == [  # type: ignore[attr-defined]
        ("12345_7", KEY, False)
    ]
    code, doc = _json(capsys, "discard", "--job", "12345_7", *run)
    assert (code, doc["ok"], doc["known"]) == (EXIT_OK, True, True)
    code, doc = _json(capsys, "discard", "--job", "12345_7", *run)
    assert (code, doc["ok"], doc["known"]) == (EXIT_OK, True, False)
    assert "no instance of job 12345_7" in str(doc["notes"])


def test_instantiate_refusals_are_json_with_exit_1(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = ["--run-dir", str(site.run_dir), "--cache", str(tmp_path / "cache")]
    code, doc = _json(capsys, "instantiate", str(tmp_path), "--job", "1", *run, *_site_args(site))
    assert code == EXIT_VERDICT
    assert doc["ok"] is False
    assert "not in the image store" in str(doc["error"])
    code, doc = _json(
        capsys, "instantiate", str(site.image), "--job", "../x", *run, *_site_args(site)
    )
    assert code == EXIT_VERDICT
    assert "'..'" in str(doc["error"])


def test_gc_dry_run_and_alive_cmd_through_the_cli(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    site.instantiate("1")
    alive = tmp_path / "alive"
    alive.write_text("#!/bin/sh\nexit 1\n")
    alive.chmod(0o755)
    run = ["--run-dir", str(site.run_dir), "--store", str(site.store)]
    code, doc = _json(capsys, "instances", "gc", "--dry-run", "--alive-cmd", str(alive), *run)
    assert (code, doc["dry_run"]) == (EXIT_OK, True)
    assert [e["job"] for e in doc["removed"]] == ["1"]  # type: ignore[attr-defined]
    assert (site.run_dir / "1").exists()
    code = cli.main(["instances", "gc", "--alive-cmd", str(alive), *run])
    out, _ = capsys.readouterr()
    assert code == EXIT_OK
    assert "removed instance" in out
    assert not (site.run_dir / "1").exists()
    code, doc = _json(capsys, "instances", "gc", "--alive-cmd", "'unbalanced", *run)
    assert code == EXIT_ERROR


@pytest.mark.parametrize("value", ["", "/no/such/dir", "(", "\x01garbage"])
def test_bare_instances_with_hostile_run_dirs(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ([], ["--json"]):
        code = cli.main(["instances", f"--run-dir={value}", *extra])
        out, err = capsys.readouterr()
        assert code in (EXIT_OK, EXIT_VERDICT, EXIT_ERROR)
        assert "Traceback" not in out + err
        if extra:
            json.loads(out)
