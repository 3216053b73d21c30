"""One fixture recipe per failure mode; each asserts the exact diagnostics.

The fixtures are loaded by a path relative to ``fixtures/``, so the file names
in the diagnostics are shown as given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imagefactory.errors import FileAccessError
from imagefactory.fields.yamlsource import MAX_DOCUMENT_BYTES
from imagefactory.recipe import BuildLimits, load_recipe
from tests.recipe.recipe_helpers import FIXTURES, MINIMAL, problems, write

CASES: dict[str, list[str]] = {
    "unknown-key": [
        "unknown-key/recipe.yaml:5:1: .pakages: unknown key 'pakages' (did you mean 'packages'?)",
    ],
    "misspelt-enum": [
        "misspelt-enum/recipe.yaml:4:11: .base.distro: expected one of debian, ubuntu;"
        " found 'debain' (did you mean 'debian'?)",
        "misspelt-enum/recipe.yaml:7:14: .root_policy: expected one of none, site-admin, user;"
        " found 'site_admin' (did you mean 'site-admin'?)",
    ],
    "bad-package": [
        "bad-package/recipe.yaml:7:5: .packages[1]: expected a Debian package name,"
        " optionally with '=version', found '-o'",
        "bad-package/recipe.yaml:8:5: .packages[2]: expected a Debian package name,"
        " optionally with '=version', found 'foo;rm'",
    ],
    "path-relative": [
        "path-relative/recipe.yaml:6:11: .files[0].path: expected an absolute path,"
        " found '../../etc/cron.d/evil'",
    ],
    "path-dotdot": [
        "path-dotdot/recipe.yaml:6:11: .files[0].path: expected a path without '..',"
        " found '/etc/ssh/../shadow'",
        "path-dotdot/recipe.yaml:8:11: .files[1].path: expected a normalised path"
        " (no '.', '//' or trailing '/'), found '/etc//motd/' (did you mean '/etc/motd'?)",
        "path-dotdot/recipe.yaml:10:11: .files[2].path: expected a path outside /proc,"
        " which is filled at run time",
    ],
    "source-escape": [
        "source-escape/recipe.yaml:7:13: .files[0].source: expected a path inside the"
        " recipe's directory, found '../secret.txt'",
    ],
    "alias": [
        "alias/recipe.yaml:5:11: .packages: YAML anchors are not allowed (found '&pkgs')"
        " (repeat the value instead; recipes can share settings with 'extends')",
        "alias/recipe.yaml:6:11: .elements: YAML aliases are not allowed (found '*pkgs')"
        " (repeat the value instead; recipes can share settings with 'extends')",
    ],
    "duplicate-key": [
        "duplicate-key/recipe.yaml:5:1: .name: duplicate key 'name' (first at line 1)",
    ],
    "syntax-error": [
        "syntax-error/recipe.yaml:4:1: .: YAML syntax error: expected ',' or '}', but got"
        " '<scalar>' (while parsing a flow mapping started at line 3, column 7)",
    ],
    "multi-doc": [
        "multi-doc/recipe.yaml:2:1: .: a recipe is one YAML document; found a second one ('---')",
    ],
    "tags": [
        "tags/recipe.yaml:1:7: .name: YAML tag '!!python/object:os.system' is not allowed",
        "tags/recipe.yaml:6:3: .labels.<<: YAML merge keys ('<<') are not allowed",
    ],
    "number-version": [
        "number-version/recipe.yaml:2:10: .version: expected a version string like '1.0',"
        " without '..', found a number (1.0) (quote it: \"1.0\")",
    ],
    "user-root-nfs": [
        "user-root-nfs/recipe.yaml:6:8: .model: a 'persistent' worker node cannot give users"
        " root, but root_policy is 'user' (line 5)",
        "user-root-nfs/recipe.yaml:7:13: .fs_access[0]: user root and site file systems"
        " don't mix: 'nfs' but root_policy is 'user' (line 5)",
        "user-root-nfs/recipe.yaml:7:18: .fs_access[1]: user root and site file systems"
        " don't mix: 'cvmfs' but root_policy is 'user' (line 5)",
    ],
    "ubuntu-i386": [
        "ubuntu-i386/recipe.yaml:6:9: .base.arch: expected an architecture ubuntu supports"
        " (x86_64, aarch64); found 'i386'",
    ],
    "boot-arch": [
        "boot-arch/recipe.yaml:7:7: .boot: 'i386' images do not boot with 'uefi'"
        " (set boot: bios, or leave it out for the architecture's usual one)",
    ],
    "fs-none-mixed": [
        "fs-none-mixed/recipe.yaml:5:13: .fs_access[0]: 'none' cannot be combined with other"
        " file-system access (nfs)",
    ],
    "extends-missing": [
        "extends-missing/recipe.yaml:1:10: .extends: no such recipe: 'no-such-parent.yaml'",
    ],
    "extends-cycle": [
        "extends-cycle/b.yaml:1:10: .extends: extends cycle:"
        " recipe.yaml -> a.yaml -> b.yaml -> a.yaml",
    ],
    "parent-error": [
        "parent-error/parent.yaml:5:5: .packages[1]: expected a Debian package name,"
        " optionally with '=version', found 'bad package'",
    ],
    "scripts-refused": [
        "scripts-refused/recipe.yaml:6:3: .scripts: scripts are refused by this build host"
        " (its policy must set allow_scripts to build recipes with scripts)",
    ],
    "element-not-allowed": [
        "element-not-allowed/recipe.yaml:5:22: .elements[1]: element 'cloud-int' is not"
        " allowed by this build host (did you mean 'cloud-init'?)",
        "element-not-allowed/recipe.yaml:5:33: .elements[2]: element 'docker' is not allowed"
        " by this build host (allowed: cloud-init, cloud-init-datasources,"
        " enable-serial-console, growroot, journal-to-console, modprobe, openssh-server,"
        " runtime-ssh-host-keys, sysctl)",
    ],
    "file-mode": [
        "file-mode/recipe.yaml:8:11: .files[0].mode: expected an octal mode string like"
        ' "0644", found an integer (644) (quote it: "0644")',
        "file-mode/recipe.yaml:11:5: .files[1].source: expected only one of 'content' or"
        " 'source', found both",
        "file-mode/recipe.yaml:12:5: .files[2]: expected one of 'content' or 'source',"
        " found neither",
        "file-mode/recipe.yaml:13:11: .files[3].path: duplicate path '/etc/a' (first at line 6)",
    ],
    "missing-keys": [
        "missing-keys/recipe.yaml:1:1: .: missing required key 'name'",
        "missing-keys/recipe.yaml:1:1: .: missing required key 'version'",
        "missing-keys/recipe.yaml:1:1: .: missing required key 'vo'",
        "missing-keys/recipe.yaml:3:3: .base: missing required key 'distro'",
    ],
    "many-errors": [
        "many-errors/recipe.yaml:1:1: .: missing required key 'version'",
        "many-errors/recipe.yaml:1:7: .name: expected a name like 'atlas-wn', found 'Demo_Image'",
        "many-errors/recipe.yaml:4:12: .base.release: expected a debian release: 11 (bullseye),"
        " 12 (bookworm), 13 (trixie); found '14'",
        "many-errors/recipe.yaml:6:12: .fs_access: expected a list of string, found 'nfs'"
        " (write a single item as a list: [nfs])",
        "many-errors/recipe.yaml:8:9: .disk.size: expected a disk size from 1G to 64G,"
        " found '100G'",
        "many-errors/recipe.yaml:9:20: .disk.formats[1]: expected one of qcow2, raw; found 'vmdk'",
        "many-errors/recipe.yaml:10:9: .expiry: expected a duration like '30d' or '4w', found '2y'",
        "many-errors/recipe.yaml:12:3: .labels.Site: expected a label key like 'site' or"
        " 'example.org/owner', found 'Site'",
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_diagnostics(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    assert problems(Path(case) / "recipe.yaml") == CASES[case]


def test_every_fixture_has_a_case() -> None:
    special = {"extends-escape", "source-symlink", "source-ok"}
    dirs = {path.name for path in FIXTURES.iterdir() if path.is_dir()}
    assert dirs - special == set(CASES)


def test_source_symlink_escaping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FIXTURES / "source-symlink", tmp_path / "source-symlink")
    (tmp_path / "secret.txt").write_text("host secret\n")
    (tmp_path / "source-symlink" / "files").mkdir()
    os.symlink("../../secret.txt", tmp_path / "source-symlink" / "files" / "link.conf")
    monkeypatch.chdir(tmp_path)
    assert problems(Path("source-symlink/recipe.yaml")) == [
        "source-symlink/recipe.yaml:8:13: .files[0].source: expected a path inside the"
        " recipe's directory, found 'files/link.conf' (a symbolic link leads outside it)",
    ]


def test_extends_escaping_include_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    root = FIXTURES.resolve() / "extends-escape" / "child"
    assert problems(Path("extends-escape/child/recipe.yaml")) == [
        "extends-escape/child/recipe.yaml:1:10: .extends: expected a recipe inside the"
        f" include roots, found '../parent.yaml' (include roots: {root})",
    ]


def test_extra_include_root_admits_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    policy = BuildLimits(include_roots=(Path("extends-escape"),))
    recipe = load_recipe(Path("extends-escape/child/recipe.yaml"), policy)
    assert recipe.base.release == "bookworm"


def test_policy_allows_scripts_and_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    policy = BuildLimits(allow_scripts=True)
    recipe = load_recipe(Path("scripts-refused/recipe.yaml"), policy)
    assert [(s.name, s.phase.dib_phase_dir) for s in recipe.scripts] == [
        ("hello", "post-install.d")
    ]
    policy = BuildLimits(allowed_elements=frozenset({"growroot", "cloud-int", "docker"}))
    recipe = load_recipe(Path("element-not-allowed/recipe.yaml"), policy)
    assert recipe.elements == ("growroot", "cloud-int", "docker")


def test_source_must_be_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    os.mkfifo(tmp_path / "fifo")
    recipe = write(
        tmp_path,
        "r.yaml",
        MINIMAL
        + "files:\n"
        + "  - {path: /etc/a, source: files}\n"
        + "  - {path: /etc/b, source: fifo}\n"
        + "  - {path: /etc/c, source: missing.txt}\n",
    )
    name = str(recipe)
    assert problems(recipe) == [
        f"{name}:6:28: .files[0].source: expected a regular file, found a directory or"
        " special file: 'files'",
        f"{name}:7:28: .files[1].source: expected a regular file, found a directory or"
        " special file: 'fifo'",
        f"{name}:8:28: .files[2].source: no such file: 'missing.txt'",
    ]


def test_source_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (1024 * 1024 + 1))
    recipe = write(tmp_path, "r.yaml", MINIMAL + "files: [{path: /etc/big, source: big}]\n")
    assert problems(recipe) == [
        f"{recipe}:5:34: .files[0].source: expected a file of at most 1048576 bytes,"
        " 'big' is larger",
    ]


def test_document_size_limit(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL + "#" * MAX_DOCUMENT_BYTES + "\n")
    assert problems(recipe) == [f"{recipe}:1:1: .: the file is larger than 1048576 bytes"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the document is empty; expected a mapping"),
        ("- a\n- b\n", "expected a mapping of recipe keys, found a list"),
        ("just text\n", "expected a mapping of recipe keys, found 'just text'"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert problems(recipe) == [f"{recipe}:1:1: .: {message}"]


def test_not_utf8(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"name: demo\nversion: \xff\n")
    assert problems(recipe) == [f"{recipe}:2:10: .: the file is not valid UTF-8"]


def test_missing_recipe_is_a_file_access_error_not_an_invalid_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "nope.yaml"
    with pytest.raises(FileAccessError, match=r"nope\.yaml: cannot read: no such file") as info:
        problems(recipe)
    assert info.value.exit_code == 2


def test_missing_parent_is_a_problem_of_the_recipe_naming_it(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "extends: gone.yaml\n")
    assert any("gone.yaml" in p for p in problems(child))


def test_value_checks(tmp_path: Path) -> None:
    recipe = write(
        tmp_path,
        "r.yaml",
        """\
        name: demo
        version: "1..2"
        base: {distro: ubuntu, release: 24.10, arch: aarch64}
        vo: ops
        services:
          enable: [chrony.service, "bad unit"]
          disable: [chrony.service]
        endorser: not-an-email
        expiry: 53w
        disk: {size: 512M}
        files:
          - {path: /etc/x, content: x, mode: "10000", owner: Root}
        """,
    )
    n = str(recipe)
    assert problems(recipe) == [
        f"{n}:2:10: .version: expected a version string like '1.0', without '..', found '1..2'",
        f"{n}:3:33: .base.release: expected a ubuntu release: 22.04 (jammy), 24.04 (noble);"
        " found '24.10' (did you mean '24.04'?)",
        f"{n}:6:28: .services.enable[1]: expected a systemd unit name like 'chrony.service',"
        " found 'bad unit'",
        f"{n}:7:13: .services.disable[0]: unit 'chrony.service' is both enabled and disabled",
        f"{n}:8:11: .endorser: expected an email address, found 'not-an-email'",
        f"{n}:9:9: .expiry: expected at most 365d, found '53w' (371 days)",
        f"{n}:10:14: .disk.size: expected a disk size from 1G to 64G, found '512M'",
        f"{n}:12:38: .files[0].mode: expected a mode from 0000 to 7777, found '10000'",
        f"{n}:12:54: .files[0].owner: expected a user name or number, found 'Root'",
    ]


def test_deep_nesting(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("labels: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert problems(recipe) == [
        f"{recipe}:1:40: .: lists and mappings nest deeper than 32 levels",
    ]


def test_huge_number(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MINIMAL.replace('"1"', "1" * 5000))
    assert problems(recipe) == [
        f"{recipe}:2:10: .version: the number is too long: 11111111111111111111...",
    ]


def test_unquoted_scalars_named_by_kind(tmp_path: Path) -> None:
    recipe = write(
        tmp_path,
        "r.yaml",
        MINIMAL.replace('"1"', "2024-01-01") + "description: yes\nendorser:\n",
    )
    n = str(recipe)
    assert problems(recipe) == [
        f"{n}:2:10: .version: expected a version string like '1.0', without '..', found a date"
        ' (2024-01-01) (quote it: "2024-01-01")',
        f'{n}:5:14: .description: expected a description, found a boolean (yes) (quote it: "yes")',
        f"{n}:6:10: .endorser: expected an email address, found nothing (null)",
    ]
