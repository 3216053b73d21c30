"""The OS-tree layer: what goes into it, its key, and the check of its tree."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder import pipeline
from imagefactory.builder.context import BuildOptions
from imagefactory.builder.element import (
    BOOT_PACKAGES,
    element_files,
    install_list,
    install_stages,
    write_files,
)
from imagefactory.builder.layer import (
    ATTRS_FILE,
    EXTRACT_HOOK,
    LAYER_IN_CACHE,
    LayerPlan,
    TreeCheck,
    add_mount_points,
    check_tree,
    extract_element_files,
    layer_files,
    plan_layer,
    tarball_name,
    write_empty_tarball,
)
from imagefactory.builder.layer_steps import layer_identity
from imagefactory.builder.layerattrs import restore
from imagefactory.recipe import Recipe, load_recipe
from tests.builder.contexts import staged_context
from tests.conftest import RECIPES

FINGERPRINT = {"bookworm": "sha256:aa", "bookworm-security": "sha256:bb"}

PARENT = """\
name: base
version: "1"
base: {distro: debian, release: "12"}
packages: [chrony, less]
files:
  - {path: /etc/motd, content: "hello\\n"}
vo: ops
"""
CHILD = """\
name: child
version: "1"
extends: base.yaml
packages: [time]
files:
  - {path: /etc/child.conf, content: "x\\n"}
vo: atlas
"""


def _recipes(tmp_path: Path, parent: str = PARENT, child: str = CHILD) -> Recipe:
    where = tmp_path / f"r{len(list(tmp_path.glob('r*')))}"
    where.mkdir()
    (where / "base.yaml").write_text(parent)
    (where / "child.yaml").write_text(child)
    return load_recipe(where / "child.yaml")


def _plan(recipe: Recipe) -> LayerPlan:
    plan = plan_layer(recipe)
    assert isinstance(plan, LayerPlan), plan
    return plan


def _layer_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recipe: Recipe,
    *,
    fingerprint: dict[str, str] = FINGERPRINT,
    tools: dict[str, str] | None = None,
    code: str = "sha256:c0de",
) -> str:
    """The layer key as the build computes it, after its own ``cache`` step."""
    monkeypatch.setattr(
        pipeline, "tool_versions", lambda _cache: tools or {"diskimage-builder": "3.43"}
    )
    monkeypatch.setattr(pipeline, "code_digest", lambda: code)
    staging = tmp_path / f"s{len(list(tmp_path.glob('s*')))}"
    staging.mkdir()
    ctx = staged_context(
        recipe, staging, tmp_path / "cache", BuildOptions(use_cache=False), fingerprint=fingerprint
    )
    pipeline.lookup_cache(ctx)
    _, key = layer_identity(ctx, _plan(recipe), staging / "layer-elements")
    return key


def test_the_example_layer_is_the_site_base_packages_and_the_boot_essentials() -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    site_base = load_recipe(RECIPES / "site-base-debian12.yaml")
    plan = _plan(recipe)
    essentials = install_list(dataclasses.replace(recipe, packages=()))
    assert set(BOOT_PACKAGES) <= set(essentials)
    assert list(plan.packages) == essentials + list(site_base.packages)
    # The child's own packages are its delta, not the layer's.
    for own in ("python3-minimal", "time", "bzip2", "nfs-common"):
        assert own in recipe.packages
        assert own not in plan.packages
    assert plan.repositories == ()
    assert tarball_name(recipe) == "debootstrap-debian-bookworm-amd64.tar.gz"


def test_the_layer_element_installs_packages_only() -> None:
    plan = _plan(load_recipe(RECIPES / "atlas-wn-debian12.yaml"))
    files = layer_files(plan)
    assert sorted(files) == [
        "README.rst",
        "element-deps",
        "install.d/00-up-to-date",
        "package-installs.yaml",
    ]
    listed = files["package-installs.yaml"][0].decode().splitlines()
    assert listed == [f"{p}:" for p in plan.packages]


def test_no_layer_without_extends_or_with_extra_elements(tmp_path: Path) -> None:
    assert plan_layer(load_recipe(RECIPES / "site-base-debian12.yaml")) == (
        "the recipe extends no other"
    )
    recipe = dataclasses.replace(_recipes(tmp_path), elements=("growroot",))
    reason = plan_layer(recipe)
    assert isinstance(reason, str)
    assert "growroot" in reason


def test_siblings_share_the_layer_and_a_parent_change_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _layer_key(tmp_path, monkeypatch, _recipes(tmp_path))
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path)) == first
    # What only the child adds (packages, files, VO) leaves the layer as it is.
    sibling = CHILD.replace("[time]", "[time, bzip2]").replace("vo: atlas", "vo: cms")
    sibling = sibling.replace("/etc/child.conf", "/etc/cms.conf")
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path, child=sibling)) == first
    # A package added to the parent: another layer.
    parent = PARENT.replace("[chrony, less]", "[chrony, less, rsyslog]")
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path, parent=parent)) != first
    # A pinned version in the parent, another base release, another boot mode.
    pinned = PARENT.replace("less]", "less=590-2]")
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path, parent=pinned)) != first
    trixie = CHILD + 'base: {distro: debian, release: "13"}\n'
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path, child=trixie)) != first
    uefi = CHILD + "boot: uefi\n"
    assert _layer_key(tmp_path, monkeypatch, _recipes(tmp_path, child=uefi)) != first


def test_the_layer_key_follows_the_archive_tools_and_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = _recipes(tmp_path)
    first = _layer_key(tmp_path, monkeypatch, recipe)
    updated = {**FINGERPRINT, "bookworm-security": "sha256:cc"}
    assert _layer_key(tmp_path, monkeypatch, recipe, fingerprint=updated) != first
    tools = {"diskimage-builder": "3.44"}
    assert _layer_key(tmp_path, monkeypatch, recipe, tools=tools) != first
    assert _layer_key(tmp_path, monkeypatch, recipe, code="sha256:c0de2") != first
    assert _layer_key(tmp_path, monkeypatch, recipe) == first


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for info in members:
            data = io.BytesIO(b"x" * info.size) if info.isreg() else None
            archive.addfile(info, data)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 3 if kind == tarfile.REGTYPE else 0
    return info


def test_the_tree_check_keeps_acls_and_capabilities_and_refuses_the_rest(tmp_path: Path) -> None:
    plain = [_member("./etc", tarfile.DIRTYPE), _member("./etc/motd")]
    assert check_tree(_tar(tmp_path / "plain.tar", plain)) == TreeCheck(None, [])
    fifo = [*plain, _member("./run/initctl", tarfile.FIFOTYPE)]
    assert check_tree(_tar(tmp_path / "fifo.tar", fifo)) == TreeCheck(None, [])

    journal = _member("./var/log/journal", tarfile.DIRTYPE)
    acl = b"\x02\x00\x00\x00\x01\x00\x07\x00\xff\xff\xff\xff"  # not UTF-8
    journal.pax_headers = {"SCHILY.xattr.system.posix_acl_default": acl.decode("latin-1")}
    ping = _member("./usr/bin/ping")
    ping.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    check = check_tree(_tar(tmp_path / "attrs.tar", [*plain, journal, ping]))
    assert check.refused is None
    assert [(p, n) for p, n, _ in check.attrs] == [
        ("var/log/journal", "system.posix_acl_default"),
        ("usr/bin/ping", "security.capability"),
    ]
    assert base64.b64decode(check.attrs[1][2]) == b"\x01\x00\x00\x02"

    selinux = _member("./etc/shadow")
    selinux.pax_headers = {"SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t"}
    refused = check_tree(_tar(tmp_path / "selinux.tar", [*plain, selinux])).refused
    assert refused is not None
    assert "./etc/shadow" in refused
    assert "SCHILY.xattr.security.selinux" in refused

    link = _member("./usr/bin/pong", tarfile.SYMTYPE)
    link.linkname = "ping"
    link.pax_headers = {"SCHILY.xattr.security.capability": "\x01"}
    refused = check_tree(_tar(tmp_path / "link.tar", [*plain, link])).refused
    assert refused is not None
    assert "neither a regular file nor a directory" in refused


def test_the_attrs_hook_sets_them_inside_the_tree_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var" / "log").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("hi\n")
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    (root / "etc" / "escape").symlink_to(outside)
    # A VFS capability, v2: effective, cap_net_raw permitted.
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    value = base64.b64encode(cap).decode()
    assert restore(root, [["etc/motd", "security.capability", value]]) == 1
    assert os.getxattr(root / "etc" / "motd", "security.capability") == cap
    with pytest.raises(ValueError, match="not one a layer may carry"):
        restore(root, [["etc/motd", "user.test", value]])
    with pytest.raises(OSError, match="symbolic links"):  # no symlink followed, even inside
        restore(root, [["etc/escape", "security.capability", value]])
    with pytest.raises(FileNotFoundError):  # ../ stays inside the tree: root/outside
        restore(root, [["../outside", "security.capability", value]])
    assert os.listxattr(outside) == []
    fifo = root / "etc" / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file or directory"):
        restore(root, [["etc/fifo", "security.capability", value]])
    element = extract_element_files([["etc/motd", "security.capability", value]])
    hook = element[EXTRACT_HOOK][0].decode()
    assert "-m imagefactory.builder.layerattrs" in hook
    assert json.loads(element[ATTRS_FILE][0]) == [["etc/motd", "security.capability", value]]


def _run_hook(files: dict[str, tuple[bytes, int]], element: Path, target: Path, cache: Path) -> Any:
    write_files(files, element.parent, element.name)
    env = {
        "PATH": os.environ["PATH"],
        "TARGET_ROOT": str(target),
        "DIB_IMAGE_CACHE": str(cache),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.run(
        [str(element / EXTRACT_HOOK)], env=env, capture_output=True, text=True, check=False
    )


def test_the_extract_hook_extracts_the_layer_into_an_empty_target_only(tmp_path: Path) -> None:
    """The generated root.d hook, run for real: tar --zstd, owners kept, attributes set."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hi\n")
    os.chown(tree / "etc" / "motd", 4242, 4343)
    cache = tmp_path / "cache"
    cache.mkdir()
    layer = cache / LAYER_IN_CACHE
    subprocess.run(
        ["tar", "-C", str(tree), "--numeric-owner", "--zstd", "-cf", str(layer), "."], check=True
    )
    write_empty_tarball(cache / "debootstrap.tar.gz")
    with tarfile.open(cache / "debootstrap.tar.gz", "r:gz") as empty:
        assert empty.getnames() == []
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    attrs = [["etc/motd", "security.capability", base64.b64encode(cap).decode()]]

    target = tmp_path / "target"
    target.mkdir()
    done = _run_hook(extract_element_files(attrs), tmp_path / "element", target, cache)
    assert done.returncode == 0, done.stderr
    motd = target / "etc" / "motd"
    assert motd.read_text() == "hi\n"
    assert (os.stat(motd).st_uid, os.stat(motd).st_gid) == (4242, 4343)
    assert os.getxattr(motd, "security.capability") == cap
    assert "1 extended attribute(s) of the layer set again" in done.stdout

    # Without attributes: only the extraction.
    plain = tmp_path / "plain"
    plain.mkdir()
    done = _run_hook(extract_element_files([]), tmp_path / "element2", plain, cache)
    assert done.returncode == 0, done.stderr
    assert (plain / "etc" / "motd").read_text() == "hi\n"
    assert os.listxattr(plain / "etc" / "motd") == []

    # A target something else already wrote (debootstrap ran after all): refused.
    busy = tmp_path / "busy"
    (busy / "etc").mkdir(parents=True)
    done = _run_hook(extract_element_files([]), tmp_path / "element3", busy, cache)
    assert done.returncode == 1
    assert "is not empty before the layer is extracted" in done.stderr
    assert not (busy / "etc" / "motd").exists()


def test_the_layer_gets_the_mount_points_dib_mounts_on(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "t.tar", [_member("./etc", tarfile.DIRTYPE), _member("./etc/motd")])
    add_mount_points(tar)
    with tarfile.open(tar) as archive:
        members = {m.name: m for m in archive}
    assert list(members) == ["./etc", "./etc/motd", "./proc", "./sys"]
    for name in ("./proc", "./sys"):
        assert members[name].isdir()
        assert members[name].mode == 0o555
        assert (members[name].uid, members[name].gid) == (0, 0)
    add_mount_points(tar)  # already there: not twice
    with tarfile.open(tar) as archive:
        assert archive.getnames().count("./proc") == 1


def test_a_full_build_installs_in_the_layers_order(tmp_path: Path) -> None:
    """The recipe's element installs the layer's packages first, then its own: a full
    build and a build on the layer run the same two apt transactions."""
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    plan = _plan(recipe)
    element = element_files(recipe)
    assert element["package-installs.yaml"] == layer_files(plan)["package-installs.yaml"]
    first, own = install_stages(recipe)
    assert first == list(plan.packages)
    assert own == ["python3-minimal", "time", "bzip2", "nfs-common"]
    script = element["install.d/02-imagefactory-packages"][0].decode()
    assert script.endswith("install-packages python3-minimal time bzip2 nfs-common\n")
    assert sorted(first + own) == sorted(install_list(recipe))  # the SBOM's requested ones
    # A recipe that extends nothing: one transaction, as before.
    base = load_recipe(RECIPES / "site-base-debian12.yaml")
    assert install_stages(base) == (install_list(base), [])
    assert "install.d/02-imagefactory-packages" not in element_files(base)
    # A child that adds no package of its own: no second transaction.
    quiet = _recipes(tmp_path, child=CHILD.replace("packages: [time]\n", ""))
    assert install_stages(quiet)[1] == []
    assert "install.d/02-imagefactory-packages" not in element_files(quiet)
