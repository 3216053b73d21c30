"""The CI templates a VO includes: valid for their CI system, pinned, and every job tested.

The schemas are the ones check-jsonschema ships (GitLab CI's and GitHub's
workflow schema), so this runs offline. The jobs themselves run in
tests/ci/test_template_jobs.py and tests/integration/test_ci_build_jobs.py;
:data:`tests.ci.templates.JOB_TESTS` says which test runs which job, and a job
that runs imagefactory without one fails here.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from imagefactory import __version__
from imagefactory.cli import build_parser
from tests.ci.templates import (
    CI,
    GITHUB,
    GITLAB,
    JOB_TESTS,
    RELEASE,
    Job,
    all_jobs,
    github_jobs,
    gitlab_jobs,
    load,
)
from tests.conftest import RECIPES, REPO

SCHEMAS = [
    (GITLAB, "vendor.gitlab-ci"),
    (RELEASE, "vendor.gitlab-ci"),
    (GITHUB, "vendor.github-workflows"),
]


def check_jsonschema(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_templates_are_these() -> None:
    assert sorted(p.name for p in CI.glob("*.yml")) == [
        "github-actions.yml",
        "gitlab-ci.yml",
        "release.gitlab-ci.yml",
    ]


@pytest.mark.parametrize(("path", "schema"), SCHEMAS, ids=lambda v: getattr(v, "name", v))
def test_valid_against_the_ci_systems_schema(path: Path, schema: str) -> None:
    result = check_jsonschema(path, schema)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("path", "schema"), SCHEMAS, ids=lambda v: getattr(v, "name", v))
def test_the_schema_check_refuses_a_broken_template(
    path: Path, schema: str, tmp_path: Path
) -> None:
    document = load(path)
    if "jobs" in document:
        document["jobs"]["lint" if "lint" in document["jobs"] else "build"]["steps"] = "run it"
    else:
        job = next(
            k
            for k in document
            if not k.startswith(".")
            and isinstance(document[k], dict)
            and k not in ("variables", "workflow")
        )
        document[job]["parallel"] = {"matrix": "every recipe"}
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(document))
    assert check_jsonschema(broken, schema).returncode != 0


def test_one_pinned_release_and_it_is_this_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert project == __version__
    gitlab = load(GITLAB)["variables"]
    github = load(GITHUB)["env"]
    assert gitlab["IMAGEFACTORY_VERSION"] == github["IMAGEFACTORY_VERSION"] == __version__
    assert gitlab["IMAGEFACTORY_IMAGE"].endswith(f":{__version__}")


def _imagefactory_jobs() -> list[Job]:
    return [job for job in all_jobs().values() if job.commands()]


@pytest.mark.parametrize("job", _imagefactory_jobs(), ids=lambda j: f"{j.template}:{j.name}")
def test_every_job_runs_the_pinned_release_and_checks_it(job: Job) -> None:
    if job.template == GITLAB.name:
        assert job.spec["image"] == "$IMAGEFACTORY_IMAGE"
    else:
        assert job.spec["container"]["image"] == "${{ vars.IMAGEFACTORY_IMAGE }}"
    first = job.steps[0].script.splitlines()
    assert first[:2] == [
        "imagefactory --version",
        'test "$(imagefactory --version)" = "imagefactory $IMAGEFACTORY_VERSION"',
    ]


@pytest.mark.parametrize("path", [GITLAB, GITHUB], ids=lambda p: p.name)
def test_nothing_of_this_checkout_is_needed(path: Path) -> None:
    text = path.read_text()
    for needs_checkout in ("scripts/setup", ".venv/bin", "pip install -e", "scripts/"):
        assert needs_checkout not in text


def test_gitlab_rules_lint_on_merge_requests_publish_on_the_default_branch() -> None:
    jobs = gitlab_jobs()
    lint, publish = jobs["imagefactory-lint"], jobs["imagefactory-publish"]
    assert [r["if"] for r in lint.spec["rules"]] == ['$CI_PIPELINE_SOURCE == "merge_request_event"']
    assert [r["if"] for r in publish.spec["rules"]] == ["$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"]
    assert publish.spec["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}
    assert "id_tokens" not in jobs["imagefactory-build"].spec
    assert publish.spec["needs"] == ["imagefactory-build"]


def test_github_conditions_and_permissions() -> None:
    document = load(GITHUB)
    jobs = github_jobs()
    assert document["permissions"] == {"contents": "read"}
    assert jobs["lint"].spec["if"] == "github.event_name == 'pull_request'"
    assert jobs["lint"].spec["permissions"]["pull-requests"] == "write"
    condition = jobs["publish"].spec["if"]
    assert "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)" in (
        condition
    )
    assert jobs["publish"].spec["permissions"] == {"contents": "read", "id-token": "write"}
    assert "permissions" not in jobs["build"].spec  # the read-only default: no token to mint
    # Values from the event or secrets reach the shell through env, never spliced into it.
    for job in jobs.values():
        for step in job.steps:
            assert "${{" not in step.script, (job.name, step.script)


def test_the_matrix_is_one_recipe_per_flavour_and_the_same_in_both() -> None:
    gitlab = gitlab_jobs()["imagefactory-build"].spec["parallel"]["matrix"]
    github = github_jobs()["build"].spec["strategy"]["matrix"]["recipe"]
    assert [entry["RECIPE"] for entry in gitlab] == [github]
    shipped = {p.stem for p in RECIPES.glob("*.yaml")}
    assert set(github) <= shipped
    assert len(github) > 1


def test_every_job_that_runs_imagefactory_has_a_test_that_runs_it() -> None:
    jobs = {job.key for job in _imagefactory_jobs()}
    assert jobs == set(JOB_TESTS), "jobs without a test (or tests of jobs that are gone)"
    for where in JOB_TESTS.values():
        path, _, name = where.partition("::")
        tree = ast.parse((REPO / path).read_text())
        tests = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert name in tests, f"{where}: no such test"


def _argv(command: str) -> list[str]:
    text = command.split(">", 1)[0]
    text = re.sub(r"\$\{?[A-Z_]+\}?", "x", text).replace("recipes/*.yaml", "recipes/x.yaml")
    return shlex.split(text)[1:]


@pytest.mark.parametrize(
    "command",
    sorted({c for job in _imagefactory_jobs() for c in job.commands()}),
)
def test_every_command_is_one_the_command_line_has(command: str) -> None:
    argv = _argv(command)
    if argv == ["--version"]:
        return
    build_parser().parse_args(argv)  # UsageError for a command or option that does not exist


def test_the_secrets_the_templates_use_are_documented() -> None:
    readme = (REPO / "README.md").read_text()
    names = set(re.findall(r"IMAGEFACTORY_[A-Z_]+", GITLAB.read_text() + GITHUB.read_text()))
    names -= {"IMAGEFACTORY_TEST_LOG"}
    missing = sorted(n for n in names if n not in readme)
    assert not missing, f"README.md does not mention {missing}"


def test_the_release_image_is_built_from_files_that_exist() -> None:
    containerfile = (CI / "Containerfile").read_text()
    for line in containerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                if source.startswith("wheelhouse/"):
                    continue  # made by the release pipeline's release-wheel job
                assert (REPO / source).exists(), source
    assert "scripts/setup --debian-packages" in containerfile
    assert "ci/install-wheel" in containerfile
    release = RELEASE.read_text()
    assert "pip wheel --no-deps --wheel-dir wheelhouse ." in release
    assert "--file ci/Containerfile" in release
    assert "--digestfile" in release
    setup = (REPO / "scripts/setup").read_text()
    assert '"${1:-}" = "--debian-packages"' in setup
