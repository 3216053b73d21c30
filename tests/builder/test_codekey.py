"""The build cache key covers the code that decides a disk's bytes, and fails closed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagefactory.builder import codekey
from imagefactory.errors import BuildError

PACKAGE = Path(codekey.__file__).resolve().parent.parent


def _digest_of_copy(root: Path) -> str:
    """code_digest() as computed by the package copy under ``root``, in its own process."""
    code = (
        "import imagefactory.builder.codekey as k, sys; "
        "assert k.__file__.startswith(sys.argv[1]), k.__file__; "
        "print(k.code_digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    "module",
    [
        "builder/assemble.py",  # the disk assembly
        "guest/tree.py",  # how the hardening sees the OS tree before it is a disk
        "harden/apply.py",  # the hardening itself
        "builder/label_steps.py",  # the harden, audit and label steps
    ],
)
def test_an_edit_to_the_code_that_makes_the_disk_changes_the_key(
    tmp_path: Path, module: str
) -> None:
    copy = tmp_path / "imagefactory"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _digest_of_copy(tmp_path)
    assert before == _digest_of_copy(tmp_path)
    edited = copy / module
    edited.write_text(edited.read_text() + "\n# one more line\n")
    assert _digest_of_copy(tmp_path) != before


def test_every_listed_module_exists_and_a_missing_one_fails() -> None:
    assert codekey.code_digest().startswith("sha256:")
    with pytest.raises(BuildError, match=r"imagefactory\.no_such_stage cannot be found"):
        codekey.code_digest(modules=(*codekey.BYTE_DECIDING_MODULES, "imagefactory.no_such_stage"))
    with pytest.raises(BuildError, match=r"package data .* is missing"):
        codekey.code_digest(data=("no-such-data",))
