"""The harden/audit/label steps in the pipeline, with the guest faked at the seam."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder import label_steps
from imagefactory.builder.assemble import Layout, PreparedTree
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.pipeline import STEPS
from imagefactory.errors import AuditError, BuildError
from imagefactory.harden.apply import apply_profile
from imagefactory.model.labels import Labels
from imagefactory.packageindex import PackageIndex
from imagefactory.profiles import load_profile
from imagefactory.progress import Progress
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.sbom import OriginSource
from imagefactory.settings import Settings
from imagefactory.vocab import BootMode
from tests.fakes import diskimages as fx
from tests.fakes.guest import FakeGuest, materialize, unhardened_tree

REPO = Path(__file__).resolve().parents[2]


def test_the_tree_is_hardened_before_it_becomes_a_disk_then_audited_and_labelled() -> None:
    names = [s.name for s in STEPS]
    start = names.index("tree")
    assert names[start : start + 5] == ["tree", "harden", "assemble", "audit", "label"]
    assert names.index("dib") < start
    assert names.index("label") < names.index("boot-test") < names.index("store")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[BuildContext]:
    recipe = load_recipe(REPO / "recipes" / "site-base-debian12.yaml", DEFAULT_LIMITS)
    with (tmp_path / "build.log").open("w") as log:
        context = BuildContext(
            recipe=recipe,
            settings=Settings(cache_dir=tmp_path / "cache"),
            options=BuildOptions(),
            progress=Progress(stream=io.StringIO()),
            staging=tmp_path,
            logfile=log,
        )
        name = "site-base-debian12-1.0.qcow2"
        context.images = {name: fx.write(tmp_path / name, fx.qcow2())}
        context.start_digests()  # as the assemble step does, before the audit
        context.profile = load_profile(recipe.hardening)
        context.versions = {"imagefactory": "0.1.0", "diskimage-builder": "3.43.0"}
        yield context


def _fake_guest(monkeypatch: pytest.MonkeyPatch, guest: FakeGuest) -> list[dict[str, Any]]:
    opened: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def fake_open(path: Path, fmt: str, **kwargs: Any) -> Iterator[FakeGuest]:
        opened.append({"path": path, "format": fmt, **kwargs})
        yield guest

    monkeypatch.setattr(label_steps, "choose_guest_accel", lambda setting, cache: "tcg")
    monkeypatch.setattr(label_steps, "fast_appliance", lambda root, on_status: root / "fixed")
    monkeypatch.setattr(label_steps, "open_guest", fake_open)
    monkeypatch.setattr(label_steps, "boot_mode", lambda g: "bios")
    monkeypatch.setattr(label_steps, "libguestfs_version", lambda: "1.48.6")
    return opened


def test_a_failed_required_check_fails_the_build_with_findings(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _fake_guest(monkeypatch, unhardened_tree())
    with pytest.raises(AuditError) as exc:
        label_steps.audit_disk(ctx)
    assert opened[0]["readonly"] is True
    assert opened[0]["format"] == "qcow2"
    rendered = exc.value.render()
    assert "[FAIL] seal.machine-id" in rendered
    assert "/etc/machine-id: machine id set" in rendered
    assert exc.value.exit_code == 1
    audit = json.loads((ctx.staging / "audit.json").read_text())
    assert audit["passed"] is False


def test_harden_then_audit_then_label(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    guest = unhardened_tree()
    tree = materialize(guest, tmp_path / "tree")
    ctx.tree = PreparedTree(tree, Layout(BootMode.BIOS, 2 << 30), "uuid", "6.1.0-28-amd64", 1)
    label_steps.harden_tree(ctx)
    assert ctx.hardening["profile"] == "worker-node-default"
    # The same record as the hardening of the same content behind the guest seam.
    expected = apply_profile(guest, ctx.need_profile(), ctx.recipe.root_policy)
    assert ctx.hardening["actions"] == expected
    assert (tree / "etc/machine-id").read_bytes() == b""
    # The audit reads the finished disk (here: the fake guest hardened the same way).
    opened = _fake_guest(monkeypatch, guest)
    label_steps.audit_disk(ctx)
    assert opened == [
        {"path": ctx.images["site-base-debian12-1.0.qcow2"], "format": "qcow2", "readonly": True,
         "accel": "tcg", "smp": min(2, os.cpu_count() or 1),
         "appliance": ctx.settings.appliance_dir / "fixed"}
    ]  # fmt: skip
    label_steps.label_disk(ctx)
    labels = Labels.read(ctx.staging).to_dict()
    assert labels["audit"]["passed"] is True
    assert labels["disk"]["format"] == "qcow2"
    assert labels["builder"]["libguestfs"] == "1.48.6"
    assert (ctx.staging / "sbom.cdx.json").is_file()
    # The digests hashed alongside the audit are the file's own.
    disk = ctx.images["site-base-debian12-1.0.qcow2"]
    assert labels["disk"]["sha256"] == hashlib.sha256(disk.read_bytes()).hexdigest()
    assert labels["disk"]["sha512"] == hashlib.sha512(disk.read_bytes()).hexdigest()
    assert ctx.digests == {disk.name: "sha256:" + labels["disk"]["sha256"]}


def test_an_image_that_cannot_be_hashed_is_a_build_error(ctx: BuildContext) -> None:
    ctx.images = {"gone.qcow2": ctx.staging / "gone.qcow2"}
    ctx.start_digests()
    with pytest.raises(BuildError, match=r"cannot hash the images: .*gone\.qcow2"):
        ctx.image_digests()


def test_hardening_applied_twice_changes_nothing_more() -> None:
    profile = load_profile("worker-node-default")
    from imagefactory.vocab import RootPolicy

    guest = unhardened_tree()
    apply_profile(guest, profile, RootPolicy.NONE)
    before = {p: (n.mode, n.data) for p, n in guest.nodes.items()}
    apply_profile(guest, profile, RootPolicy.NONE)
    assert {p: (n.mode, n.data) for p, n in guest.nodes.items()} == before


def _audited(ctx: BuildContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    guest = unhardened_tree()
    tree = materialize(guest, tmp_path / "tree")
    ctx.tree = PreparedTree(tree, Layout(BootMode.BIOS, 2 << 30), "uuid", "6.1.0-28-amd64", 1)
    label_steps.harden_tree(ctx)
    apply_profile(guest, ctx.need_profile(), ctx.recipe.root_policy)  # the disk, hardened alike
    _fake_guest(monkeypatch, guest)
    label_steps.audit_disk(ctx)


def _sources(repository_text: str) -> list[OriginSource]:
    archive = PackageIndex()
    archive.add("Package: libc6\nVersion: 2.36-9+deb12u9\nArchitecture: amd64\n", "archive")
    repo = PackageIndex()
    repo.add(repository_text, "repo")
    return [
        OriginSource("archive", None, archive.lists, archive.knows),
        OriginSource("repository:shells", "http://127.0.0.1:1/r", repo.lists, repo.knows),
    ]


def test_the_sbom_names_each_packages_origin_from_the_verified_indexes(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _audited(ctx, monkeypatch, tmp_path)
    ctx.origin_sources = _sources("Package: bash\nVersion: 5.2.15-2+b7\nArchitecture: amd64\n")
    label_steps.label_disk(ctx)
    sbom = json.loads((ctx.staging / "sbom.cdx.json").read_text())
    origins = {
        c["name"]: next(p["value"] for p in c["properties"] if p["name"] == "imagefactory:origin")
        for c in sbom["components"]
    }
    assert origins == {"bash": "repository:shells", "libc6": "archive"}


def test_a_repository_package_the_host_never_verified_fails_the_label_step(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The chroot's apt fetched a newer Release: bash 5.2.15-2+b7 is not what was verified."""
    _audited(ctx, monkeypatch, tmp_path)
    ctx.origin_sources = _sources("Package: bash\nVersion: 5.2.15-2+b2\nArchitecture: amd64\n")
    with pytest.raises(BuildError) as info:
        label_steps.label_disk(ctx)
    assert info.value.message == (
        "site-base-debian12-1.0.qcow2 holds 1 package(s) of a third-party repository that its"
        " verified indexes do not list: bash 5.2.15-2+b7 (amd64), which the verified indexes"
        " of repository:shells do not list"
    )
    assert "build again" in (info.value.hint or "")
    assert not (ctx.staging / "sbom.cdx.json").exists()


def test_the_audit_takes_one_vcpu_beside_the_boot_test(ctx: BuildContext) -> None:
    assert label_steps._appliance_cpus(ctx) == min(2, os.cpu_count() or 1)
    ctx.options = BuildOptions(boot_test=True)
    assert label_steps._appliance_cpus(ctx) == 1
