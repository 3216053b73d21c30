"""The harden/audit/label steps in the pipeline, with the guest faked at the seam."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder import label_steps
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.pipeline import STEPS
from imagefactory.errors import AuditError
from imagefactory.harden.apply import apply_profile
from imagefactory.model.labels import Labels
from imagefactory.profiles import load_profile
from imagefactory.progress import Progress
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.settings import Settings
from tests.fakes import diskimages as fx
from tests.fakes.guest import FakeGuest, unhardened_tree

REPO = Path(__file__).resolve().parents[2]


def test_steps_harden_audit_and_label_after_assemble() -> None:
    names = [s.name for s in STEPS]
    assert names[names.index("assemble") + 1 : names.index("assemble") + 4] == [
        "harden",
        "audit",
        "label",
    ]
    assert names.index("label") < names.index("store")


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


def test_harden_then_audit_then_label(ctx: BuildContext, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = unhardened_tree()
    opened = _fake_guest(monkeypatch, guest)
    label_steps.harden_disk(ctx)
    assert opened[0]["readonly"] is False
    assert ctx.hardening["profile"] == "worker-node-default"
    assert ctx.digests["site-base-debian12-1.0.qcow2"].startswith("sha256:")
    label_steps.audit_disk(ctx)
    label_steps.label_disk(ctx)
    labels = Labels.read(ctx.staging).to_dict()
    assert labels["audit"]["passed"] is True
    assert labels["disk"]["format"] == "qcow2"
    assert labels["builder"]["libguestfs"] == "1.48.6"
    assert (ctx.staging / "sbom.cdx.json").is_file()


def test_hardening_applied_twice_changes_nothing_more() -> None:
    profile = load_profile("worker-node-default")
    from imagefactory.vocab import RootPolicy

    guest = unhardened_tree()
    apply_profile(guest, profile, RootPolicy.NONE)
    before = {p: (n.mode, n.data) for p, n in guest.nodes.items()}
    apply_profile(guest, profile, RootPolicy.NONE)
    assert {p: (n.mode, n.data) for p, n in guest.nodes.items()} == before


def test_other_formats_are_converted_from_the_hardened_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(REPO / "recipes" / "site-base-debian12.yaml", DEFAULT_LIMITS)
    with (tmp_path / "build.log").open("w") as log:
        ctx = BuildContext(
            recipe=recipe,
            settings=Settings(cache_dir=tmp_path / "cache"),
            options=BuildOptions(),
            progress=Progress(stream=io.StringIO()),
            staging=tmp_path,
            logfile=log,
        )
        primary = fx.write(tmp_path / "site-base-debian12-1.0.qcow2", fx.qcow2())
        raw = fx.write(tmp_path / "site-base-debian12-1.0.raw", b"unhardened")
        ctx.images = {primary.name: primary, raw.name: raw}
        ctx.profile = load_profile(recipe.hardening)
        _fake_guest(monkeypatch, unhardened_tree())
        calls: list[list[str]] = []

        def fake_run(argv: list[str], **kwargs: Any) -> None:
            calls.append(argv)
            Path(argv[-1]).write_bytes(b"converted from the hardened disk")

        monkeypatch.setattr(label_steps, "run", fake_run)
        label_steps.harden_disk(ctx)
    assert calls == [["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(primary), str(raw)]]
    assert raw.read_bytes() == b"converted from the hardened disk"
    assert ctx.digests[raw.name] != ctx.digests[primary.name]
