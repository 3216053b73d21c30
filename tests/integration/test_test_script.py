"""scripts/test refuses a whole run where its disk images cannot fit, before any of it.

A real small file system (a 64 MiB tmpfs, mounted as root) as ``TMPDIR``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def small_tmp(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _test_script(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run(
        [str(REPO / "scripts" / "test"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_whole_run_is_refused_at_once_naming_the_directory(small_tmp: Path) -> None:
    done = _test_script(small_tmp)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"only 0.1 GiB free in {small_tmp}" in done.stderr
    assert "hint: free space there, or point TMPDIR at a file system with room" in done.stderr
    # Refused before the checks: neither ruff nor pytest ran.
    assert "All checks passed" not in done.stdout + done.stderr
    assert "passed" not in done.stdout


def test_chosen_tests_only_warn(small_tmp: Path) -> None:
    done = _test_script(small_tmp, "--version")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"warning: only 0.1 GiB free in {small_tmp}" in done.stderr
    assert "pytest" in done.stdout + done.stderr
