"""The canonical form and digest: equal content, equal digest; any change, another."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from imagefactory.recipe import load_recipe
from tests.recipe.recipe_helpers import FIXTURES, MINIMAL, write


def test_canonical_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    recipe = load_recipe(Path("source-ok/recipe.yaml"))
    data = b"key = value\n"
    assert recipe.canonical() == {
        "name": "demo",
        "version": "1",
        "description": "",
        "base": {"distro": "debian", "release": "bookworm", "version": "12", "arch": "x86_64"},
        "packages": [],
        "files": [
            {
                "path": "/etc/demo.conf",
                "mode": "0600",
                "owner": "0",
                "group": "adm",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "content": "key = value\n",
            }
        ],
        "services": {"enable": [], "disable": []},
        "elements": [],
        "scripts": [],
        "disk": {"size": 2 * 1024**3, "formats": ["qcow2"]},
        "boot": "bios",
        "vo": "ops",
        "root_policy": "none",
        "model": "non-persistent",
        "fs_access": ["none"],
        "hardening": "worker-node-default",
        "expiry_days": 30,
        "endorser": None,
        "labels": {},
    }
    text = json.dumps(recipe.canonical(), sort_keys=True, separators=(",", ":"))
    assert recipe.digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert recipe.sources == (
        (FIXTURES / "source-ok/recipe.yaml").resolve(),
        (FIXTURES / "source-ok/files/demo.conf").resolve(),
    )


def test_binary_content_is_base64(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"\xff\x00\x01")
    recipe = load_recipe(write(tmp_path, "r.yaml", MINIMAL + "files: [{path: /b, source: blob}]\n"))
    entry = recipe.canonical()["files"][0]
    assert entry["content_base64"] == "/wAB"
    assert "content" not in entry


def test_same_content_same_digest(tmp_path: Path) -> None:
    one = write(tmp_path, "one/r.yaml", MINIMAL + "packages: [less]\n")
    # Another layout, quoting, key order and explicit defaults: the same recipe.
    two = write(
        tmp_path,
        "two/r.yaml",
        """\
        vo: ops
        packages:
          - less
          - less
        base:
          release: bookworm
          distro: debian
          arch: x86_64
        version: '1'
        name: "demo"
        disk: {size: 2048M, formats: [qcow2]}
        expiry: 30d
        """,
    )
    assert load_recipe(one).digest == load_recipe(two).digest


def test_changed_source_file_changes_digest(tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("one\n")
    path = write(tmp_path, "r.yaml", MINIMAL + "files: [{path: /etc/motd, source: motd}]\n")
    before = load_recipe(path).digest
    assert load_recipe(path).digest == before
    (tmp_path / "motd").write_text("two\n")
    assert load_recipe(path).digest != before


def test_extends_matches_flat_recipe(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", MINIMAL + "packages: [less]\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\npackages: [procps]\n")
    flat = write(tmp_path, "flat.yaml", MINIMAL + "packages: [less, procps]\n")
    assert load_recipe(child).canonical() == load_recipe(flat).canonical()
    assert load_recipe(child).digest == load_recipe(flat).digest


@pytest.mark.parametrize(
    ("arch", "boot", "expected"),
    [
        ("x86_64", None, "bios"),
        ("x86_64", "uefi", "uefi"),
        ("i386", None, "bios"),
        ("aarch64", None, "uefi"),
    ],
)
def test_boot_mode_defaults_to_the_architectures_usual_one(
    tmp_path: Path, arch: str, boot: str | None, expected: str
) -> None:
    text = f'name: t\nversion: "1"\nbase: {{distro: debian, release: "12", arch: {arch}}}\nvo: x\n'
    if boot is not None:
        text += f"boot: {boot}\n"
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.boot == expected
    assert recipe.canonical()["boot"] == expected
