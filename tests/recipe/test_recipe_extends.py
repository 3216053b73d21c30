"""``extends``: how parents and children combine, and the limits on the chain."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from imagefactory.recipe import BuildLimits, load_recipe
from imagefactory.vocab import FsAccess
from tests.recipe.recipe_helpers import MINIMAL, problems, write

PARENT = """\
name: parent
version: "1"
description: the parent
base: {distro: debian, release: "12", arch: i386}
packages: [less, procps]
files:
  - {path: /etc/a, content: parent a}
  - {path: /etc/b, content: parent b, mode: "0600"}
services: {enable: [chrony.service]}
disk: {size: 4G}
vo: ops
fs_access: [none]
labels: {site: example, tier: "2"}
"""


def test_child_over_parent(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", PARENT)
    child = write(
        tmp_path,
        "child.yaml",
        """\
        extends: parent.yaml
        name: child
        base: {arch: x86_64}
        packages: [procps, bzip2]
        files:
          - {path: /etc/b, content: child b}
          - {path: /etc/c, content: child c}
        services: {disable: [rsyslog.service]}
        disk: {formats: [raw]}
        fs_access: [nfs]
        labels: {tier: "1"}
        """,
    )
    recipe = load_recipe(child)
    assert recipe.name == "child"  # scalars: the child's
    assert recipe.description == "the parent"  # kept where the child says nothing
    # mappings merge key by key
    assert (recipe.base.distro, recipe.base.release, recipe.base.arch) == (
        "debian",
        "bookworm",
        "x86_64",
    )
    assert (recipe.disk.size, recipe.disk.formats) == (4 * 1024**3, ("raw",))
    assert (recipe.services.enable, recipe.services.disable) == (
        ("chrony.service",),
        ("rsyslog.service",),
    )
    assert dict(recipe.labels) == {"site": "example", "tier": "1"}
    # lists are joined, each item once, order kept
    assert recipe.packages == ("less", "procps", "bzip2")
    # files: the child's entry replaces the parent's of the same path, wholly
    assert [(str(f.path), f.content, f.mode) for f in recipe.files] == [
        ("/etc/a", b"parent a", 0o644),
        ("/etc/b", b"child b", 0o644),
        ("/etc/c", b"child c", 0o644),
    ]
    # fs_access is replaced, since `none` excludes the others
    assert recipe.fs_access == (FsAccess.NFS,)
    assert recipe.sources == (child.resolve(), (tmp_path / "parent.yaml").resolve())


def test_several_parents_in_order(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MINIMAL + "packages: [aa]\ndescription: from a\n")
    write(tmp_path, "sub/b.yaml", "packages: [bb, aa]\ndescription: from b\n")
    child = write(tmp_path, "child.yaml", "extends: [a.yaml, sub/b.yaml]\npackages: [cc]\n")
    recipe = load_recipe(child)
    assert recipe.packages == ("aa", "bb", "cc")
    assert recipe.description == "from b"


def test_parent_file_source_is_relative_to_the_parent(tmp_path: Path) -> None:
    write(tmp_path, "base/files/motd", "hello\n")
    write(tmp_path, "base/base.yaml", MINIMAL + "files: [{path: /etc/motd, source: files/motd}]\n")
    child = write(tmp_path, "child.yaml", "extends: base/base.yaml\n")
    recipe = load_recipe(child)
    assert recipe.files[0].path == PurePosixPath("/etc/motd")
    assert recipe.files[0].content == b"hello\n"
    assert recipe.sources[-1] == (tmp_path / "base/files/motd").resolve()


def test_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", MINIMAL)
    write(tmp_path, "left.yaml", "extends: root.yaml\npackages: [left]\n")
    write(tmp_path, "right.yaml", "extends: root.yaml\npackages: [right]\n")
    child = write(tmp_path, "child.yaml", "extends: [left.yaml, right.yaml]\n")
    assert load_recipe(child).packages == ("left", "right")


def test_required_keys_may_come_from_parents_only(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "base: {distro: debian, release: '12'}\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: x\n")
    assert problems(child) == [
        f"{child}:1:1: .: missing required key 'version'",
        f"{child}:1:1: .: missing required key 'vo'",
    ]


def test_whole_recipe_rules_see_both_files(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", MINIMAL + "fs_access: [dcap]\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nroot_policy: user\n")
    assert problems(child) == [
        f"{tmp_path}/parent.yaml:5:13: .fs_access[0]: user root and site file systems"
        " don't mix: 'dcap' but root_policy is 'user' (line 2)",
    ]


def test_child_release_checked_against_parent_distro(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nbase: {release: noble}\n")
    assert problems(child) == [
        f"{child}:2:17: .base.release: expected a debian release: 11 (bullseye), 12 (bookworm),"
        " 13 (trixie); found 'noble'",
    ]


def test_relative_names_in_diagnostics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "lib/parent.yaml", "packages: [BAD]\n")
    write(tmp_path, "recipes/child.yaml", "extends: ../lib/parent.yaml\n" + MINIMAL)
    monkeypatch.chdir(tmp_path)
    policy = BuildLimits(include_roots=(Path("lib"),))
    assert problems(Path("recipes/child.yaml"), policy) == [
        "lib/parent.yaml:1:12: .packages[0]: expected a Debian package name, optionally with"
        " '=version', found 'BAD'",
    ]


def test_depth_limit(tmp_path: Path) -> None:
    write(tmp_path, "r9.yaml", MINIMAL)
    for level in range(9):
        write(tmp_path, f"r{level}.yaml", f"extends: r{level + 1}.yaml\n")
    assert load_recipe(tmp_path / "r1.yaml").name == "demo"  # 8 levels above r1
    assert problems(tmp_path / "r0.yaml") == [
        f"{tmp_path}/r8.yaml:1:10: .extends: extends nests deeper than 8 levels",
    ]


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("parent.txt", "expected a relative path to a .yaml recipe, found 'parent.txt'"),
        (
            "/etc/passwd.yaml",
            "expected a relative path to a .yaml recipe, found '/etc/passwd.yaml'",
        ),
        ("{a: b}", "expected a string or list of string, found a mapping"),
    ],
)
def test_extends_value(tmp_path: Path, extends: str, message: str) -> None:
    child = write(tmp_path, "child.yaml", f"extends: {extends}\n" + MINIMAL)
    assert problems(child) == [f"{child}:1:10: .extends: {message}"]


def test_parent_errors_even_when_overridden(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "vo: Not A VO\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\n" + MINIMAL)
    assert problems(child) == [
        f"{tmp_path}/parent.yaml:1:5: .vo: expected a VO name like 'atlas', found 'Not A VO'",
    ]


def test_unreadable_parent_still_reports_the_child(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "base: [\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: Bad\n")
    assert problems(child) == [
        f"{child}:2:7: .name: expected a name like 'atlas-wn', found 'Bad'",
        f"{tmp_path}/parent.yaml:2:1: .: YAML syntax error: expected the node content, but"
        " found '<stream end>' (while parsing a flow node started at line 2, column 1)",
    ]
