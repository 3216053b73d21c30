"""The release's wheel builds and installs the way the release image installs it.

What the CI templates run is the wheel the release pipeline builds
(``pip wheel --no-deps``) installed by ``ci/install-wheel`` (ci/Containerfile):
here from the files of this checkout alone, into a fresh virtual environment
with its dependencies from the package index, and then used from elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagefactory import __version__
from tests.conftest import RECIPES, REPO

pytestmark = pytest.mark.integration


def _sources(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored): no build leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def test_the_wheel_builds_installs_and_runs(tmp_path: Path) -> None:
    src = _sources(tmp_path / "src")
    wheelhouse = tmp_path / "wheelhouse"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(wheelhouse),
            str(src),
        ],
        check=True,
        timeout=600,
    )
    wheel = wheelhouse / f"imagefactory-{__version__}-py3-none-any.whl"
    assert [p.name for p in wheelhouse.iterdir()] == [wheel.name]  # what the Containerfile copies

    prefix, bindir = tmp_path / "opt-imagefactory", tmp_path / "bin"
    installed = subprocess.run(
        [str(REPO / "ci/install-wheel"), str(wheel), str(prefix), str(bindir)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines()[-1] == f"imagefactory {__version__}"

    # Used as a job uses it: from the VO's checkout, nothing of this one on the path.
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    work = tmp_path / "vo-checkout"
    shutil.copytree(RECIPES, work / "recipes")

    def imagefactory(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["imagefactory", *argv],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    version = imagefactory("--version")
    assert version.stdout == f"imagefactory {__version__}\n", version.stderr
    assert os.path.realpath(bindir / "imagefactory").startswith(str(prefix))
    lint = imagefactory("lint", "recipes/atlas-wn-debian12.yaml", "--format", "markdown")
    assert lint.returncode == 0, lint.stderr
    assert "| os.distro | debian |" in lint.stdout
    schema = imagefactory("recipe", "schema")  # package data (the field table's schema) is there
    assert schema.stdout == (RECIPES / "recipe.schema.json").read_text()
