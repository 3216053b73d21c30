"""The templates' build jobs, run as the CI runs them, on the example recipe.

The job's own command line builds the first recipe of the template's matrix
(the example) from a VO checkout. It is served from the build cache the
session's example build filled (the same recipe, code, tools and archive
fingerprint make the same cache key), so no new diskimage-builder run, and the
boot test's verdict is the cached disk's (the build serves a byte-identical
disk with the boot test it passed when it was built).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from imagefactory.builder.pipeline import BuildResult
from imagefactory.settings import Settings
from tests.ci.templates import Runner, assert_every_command_ran, github_jobs, gitlab_jobs
from tests.conftest import RECIPES

pytestmark = pytest.mark.integration


def _checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "checkout"
    shutil.copytree(RECIPES, repo / "recipes")
    return repo


def _seams(tmp_path: Path, example_build: BuildResult, build_settings: Settings) -> dict[str, str]:
    """The host's settings with the session's build cache; the archive as that build saw it."""
    host = os.environ.get("IMAGEFACTORY_SETTINGS") or "/etc/imagefactory/settings.yaml"
    data = yaml.safe_load(Path(host).read_text()) if Path(host).is_file() else {}
    data = data or {}
    data.setdefault("build", {})["cache_dir"] = str(build_settings.cache_dir)
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(data))
    record = json.loads((example_build.directory / "build.json").read_text())
    archive = tmp_path / "archive.json"
    archive.write_text(json.dumps(record["base"]["archive"]))
    return {
        "IMAGEFACTORY_SETTINGS": str(settings),
        "IMAGEFACTORY_TEST_ARCHIVE": str(archive),
    }


def _check_built(checkout: Path, recipe: str, run_output: str) -> None:
    """The job's --json result: the example, from the cache, boot-tested, under images/."""
    result = json.loads((checkout / f"build-{recipe}.json").read_text())
    assert result["cache_hit"] is True, "the template's build was not the cached example"
    assert result["boot_test"]["passed"] is True, result["boot_test"]
    image = Path(result["directory"])
    assert image.resolve() == (checkout / "images" / recipe / "1.0").resolve()
    assert (image / "labels.json").is_file(), run_output


def test_gitlab_build_job(
    tmp_path: Path, example_build: BuildResult, build_settings: Settings
) -> None:
    checkout = _checkout(tmp_path)
    job = gitlab_jobs()["imagefactory-build"]
    [recipe, *_] = job.spec["parallel"]["matrix"][0]["RECIPE"]
    assert recipe == example_build.directory.parent.name
    env = {
        "GITLAB_CI": "true",
        "CI": "true",
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_PROJECT_DIR": str(checkout),
        "RECIPE": recipe,  # the matrix entry of this job
        **_seams(tmp_path, example_build, build_settings),
    }
    run = Runner(tmp_path, checkout).run(job, env, timeout=1800)
    assert_every_command_ran(job, run)
    _check_built(checkout, recipe, run.output)


def test_github_build_job(
    tmp_path: Path, example_build: BuildResult, build_settings: Settings
) -> None:
    checkout = _checkout(tmp_path)
    job = github_jobs()["build"]
    [recipe, *_] = job.spec["strategy"]["matrix"]["recipe"]
    env = {
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        **_seams(tmp_path, example_build, build_settings),
    }
    expressions = {"matrix.recipe": recipe, "github.workspace": str(checkout)}
    run = Runner(tmp_path, checkout).run(job, env, expressions, timeout=1800)
    assert_every_command_ran(job, run)
    _check_built(checkout, recipe, run.output)
