"""The CI templates as the CI systems read them, and their jobs run as a runner would.

A job's shell runs for real (bash, curl, jq, the template's own loops and
tests), in a directory standing for the VO's checkout, with a clean
environment holding only the variables the CI would set. ``imagefactory`` on
its PATH is the real command line (:mod:`tests.ci.shim`), which logs every
call, so a test can check that every ``imagefactory`` line of a job ran.

GitLab: a job's ``before_script`` and ``script`` (``extends`` resolved) in one
``bash -eo pipefail``, as the runner does; the template's and the job's
``variables`` in the environment. GitHub: each ``run`` step in its own
``bash --noprofile --norc -eo pipefail`` with the workflow's, job's and step's
``env``, whose ``${{ }}`` expressions are looked up in what the test gives
(an expression the test does not know fails it); ``uses`` steps are the
test's to stand in for (checkout: the directory; artifacts: the same directory).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

CI = REPO / "ci"
GITLAB = CI / "gitlab-ci.yml"
GITHUB = CI / "github-actions.yml"
RELEASE = CI / "release.gitlab-ci.yml"

#: Top-level GitLab keys that are not jobs.
_GITLAB_KEYWORDS = {"stages", "variables", "workflow", "include", "default", "image", "cache"}

_GITLAB_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
#: An ``imagefactory`` command in a script line (at a line start, after a pipe or ``$(``).
_COMMAND = re.compile(r"(?:^|\$\(|[|;&]\s*)\s*(imagefactory(?:\s[^\n;|&)]*)?)", re.MULTILINE)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@dataclass
class Step:
    """One shell of a job: its script and its own environment (unexpanded)."""

    script: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    template: str
    name: str
    steps: list[Step]
    env: dict[str, str]
    spec: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.template, self.name)

    def commands(self) -> list[str]:
        """Every ``imagefactory ...`` command line the job runs, as written."""
        return [m.group(1).strip() for s in self.steps for m in _COMMAND.finditer(s.script)]


def _resolve_gitlab(doc: dict[str, Any], name: str) -> dict[str, Any]:
    spec = dict(doc[name])
    parents = spec.pop("extends", [])
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged.update(_resolve_gitlab(doc, parent))
    return {**merged, **spec}


def gitlab_jobs(path: Path = GITLAB) -> dict[str, Job]:
    doc = load(path)
    top = {k: str(v) for k, v in (doc.get("variables") or {}).items()}
    jobs = {}
    for name in doc:
        if name in _GITLAB_KEYWORDS or name.startswith("."):
            continue
        spec = _resolve_gitlab(doc, name)
        lines = [*spec.get("before_script", []), *spec.get("script", [])]
        env = {**top, **{k: str(v) for k, v in (spec.get("variables") or {}).items()}}
        jobs[name] = Job(path.name, name, [Step("\n".join(lines))], env, spec)
    return jobs


def github_jobs(path: Path = GITHUB) -> dict[str, Job]:
    doc = load(path)
    top = {k: str(v) for k, v in (doc.get("env") or {}).items()}
    jobs = {}
    for name, spec in doc["jobs"].items():
        steps = [
            Step(step["run"], {k: str(v) for k, v in (step.get("env") or {}).items()})
            for step in spec["steps"]
            if "run" in step
        ]
        env = {**top, **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
        jobs[name] = Job(path.name, name, steps, env, spec)
    return jobs


def all_jobs() -> dict[tuple[str, str], Job]:
    return {job.key: job for job in [*gitlab_jobs().values(), *github_jobs().values()]}


def _expand_gitlab(value: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` of known variables replaced, as GitLab does in ``variables``."""
    return _GITLAB_VARIABLE.sub(lambda m: env.get(m[1] or m[2], m[0]), value)


def expand_expressions(value: str, known: dict[str, str]) -> str:
    """``${{ expr }}`` replaced by what the test says the CI would give."""

    def lookup(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in known:
            raise AssertionError(f"the test does not know the expression ${{{{ {expression} }}}}")
        return known[expression]

    return _EXPRESSION.sub(lookup, value)


@dataclass
class Run:
    """What running a job did: its exit code, output and the imagefactory calls."""

    code: int
    output: str
    calls: list[dict[str, Any]]

    def ran(self, command: str) -> bool:
        """Whether a logged call matches ``command`` (its subcommand words, before any option)."""
        tokens = shlex.split(command.split(">", 1)[0])[1:]
        words = tokens[:1] if tokens and tokens[0].startswith("-") else []
        for word in [] if words else tokens:
            if word.startswith("-") or any(c in word for c in "$/.*"):
                break
            words.append(word)
        assert words, f"no subcommand in {command!r}"
        return any(call["argv"][: len(words)] == words for call in self.calls)


class Runner:
    """Runs jobs in ``workdir`` (the VO's checkout) with ``imagefactory`` on the PATH."""

    def __init__(self, tmp: Path, workdir: Path) -> None:
        self.tmp = tmp
        self.workdir = workdir
        self.bin = tmp / "ci-bin"
        self.bin.mkdir(exist_ok=True)
        self.log = tmp / "imagefactory-calls.jsonl"
        shim = self.bin / "imagefactory"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tests.ci.shim "$@"\n')
        shim.chmod(0o755)
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)

    def base_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "IMAGEFACTORY_TEST_LOG": str(self.log),
        }

    def run(
        self,
        job: Job,
        ci_env: dict[str, str],
        expressions: dict[str, str] | None = None,
        timeout: float = 900,
    ) -> Run:
        start = self.log.stat().st_size if self.log.exists() else 0
        output, code = [], 0
        for step in job.steps:
            env = {**self.base_env(), **ci_env}
            for key, raw in {**job.env, **step.env}.items():
                value = expand_expressions(raw, expressions or {})
                if job.template == GITLAB.name:  # GitLab expands $VAR in variables
                    value = _expand_gitlab(value, env)
                env.setdefault(key, value)
            if job.template == GITLAB.name:
                argv = ["bash", "-eo", "pipefail", "-c", step.script]
            else:
                argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script]
            proc = subprocess.run(
                argv,
                cwd=self.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            output.append(f"$ {job.name}\n{proc.stdout}{proc.stderr}")
            code = proc.returncode
            if code:
                break
        calls = []
        if self.log.exists():
            with self.log.open(encoding="utf-8") as stream:
                stream.seek(start)
                calls = [json.loads(line) for line in stream if line.strip()]
        return Run(code, "".join(output), calls)


#: Every job of the templates that runs imagefactory, and the test that runs it.
#: A job missing here fails tests/ci/test_templates.py.
JOB_TESTS = {
    ("gitlab-ci.yml", "imagefactory-lint"): "tests/ci/test_template_jobs.py::test_gitlab_lint_job",
    ("gitlab-ci.yml", "imagefactory-build"): (
        "tests/integration/test_ci_build_jobs.py::test_gitlab_build_job"
    ),
    ("gitlab-ci.yml", "imagefactory-publish"): (
        "tests/ci/test_template_jobs.py::test_gitlab_publish_job"
    ),
    ("github-actions.yml", "lint"): "tests/ci/test_template_jobs.py::test_github_lint_job",
    ("github-actions.yml", "build"): (
        "tests/integration/test_ci_build_jobs.py::test_github_build_job"
    ),
    ("github-actions.yml", "publish"): "tests/ci/test_template_jobs.py::test_github_publish_job",
}


def assert_every_command_ran(job: Job, run: Run) -> None:
    """The job passed and each of its imagefactory lines was really called."""
    assert run.code == 0, run.output
    missing = [c for c in job.commands() if not run.ran(c)]
    assert not missing, f"{job.name}: not run: {missing}\n{run.output}"
