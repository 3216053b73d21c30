"""The layer step with diskimage-builder faked at run(): built once, then reused as it
was stored, never when changed, refused trees cached as refused, and the child's DIB
pointed at it."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder import dibrun, layer_steps, pipeline
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.layer import (
    ATTRS_FILE,
    EXTRACT_ELEMENT,
    EXTRACT_HOOK,
    LAYER_FILE,
    LAYER_IN_CACHE,
)
from imagefactory.errors import CommandError, ImageFactoryError
from imagefactory.recipe import load_recipe
from imagefactory.run import run as real_run
from tests.builder.contexts import staged_context
from tests.conftest import RECIPES

EXAMPLE = RECIPES / "atlas-wn-debian12.yaml"


class FakeDib:
    """disk-image-create writing a small tree and a dpkg manifest; other commands run."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.argv: list[list[str]] = []
        self.xattrs: dict[str, str] = {}
        #: The layer as the child's run could read it from its image cache, if there.
        self.layer_seen: bytes | None = None
        self.fail = False

    def __call__(self, argv: list[str], **kwargs: Any) -> Any:
        if not str(argv[0]).endswith("disk-image-create"):
            return real_run(argv, **kwargs)
        env = kwargs["env"]
        self.calls.append(env)
        layer = Path(env["DIB_IMAGE_CACHE"]) / LAYER_IN_CACHE
        if layer.exists():
            self.layer_seen = layer.read_bytes()
        if self.fail:
            raise CommandError("a failed DIB run", argv=["disk-image-create"], returncode=1)
        self.argv.append([str(a) for a in argv])
        out = Path(argv[argv.index("-o") + 1])
        manifests = Path(f"{out}.d") / "dib-manifests"
        manifests.mkdir(parents=True)
        packages = [{"package": "chrony", "version": "4.3-2", "arch": "amd64", "status": "ii"}]
        (manifests / "dib-manifest-dpkg-rootfs").write_text(json.dumps({"packages": packages}))
        with tarfile.open(f"{out}.tar", "w", format=tarfile.PAX_FORMAT) as archive:
            info = tarfile.TarInfo("./etc/motd")
            info.size = 6
            info.pax_headers = dict(self.xattrs)
            archive.addfile(info, io.BytesIO(b"hello\n"))
        kwargs["on_line"]("x | dib-run-parts Running /tmp/x/install.d/01-package-installs\n")
        return None


@pytest.fixture
def fake_dib(monkeypatch: pytest.MonkeyPatch) -> FakeDib:
    fake = FakeDib()
    monkeypatch.setattr(dibrun, "run", fake)
    monkeypatch.setattr(pipeline, "tool_versions", lambda _cache: {"diskimage-builder": "3.43"})
    return fake


def _ctx(tmp_path: Path, *, use_layer: bool = True) -> BuildContext:
    staging = tmp_path / f"staging{len(list(tmp_path.glob('staging*')))}"
    staging.mkdir()
    recipe = load_recipe(EXAMPLE)
    options = BuildOptions(use_cache=False, use_layer=use_layer)
    ctx = staged_context(recipe, staging, tmp_path / "cache", options)
    pipeline.lookup_cache(ctx)
    return ctx


def _layer_members(path: Path) -> list[str]:
    listing = real_run(["tar", "--zstd", "-tf", str(path)], capture=True)
    return str(listing.stdout).split()


def _empty_tarball(path: Path) -> bool:
    with tarfile.open(path, "r:gz") as archive:
        return archive.getnames() == []


def test_built_once_then_reused_and_given_to_the_childs_dib(
    tmp_path: Path, fake_dib: FakeDib
) -> None:
    first = _ctx(tmp_path)
    layer_steps.prepare_layer(first)
    assert first.layer is not None
    assert first.layer["used"] is True
    assert first.layer["hit"] is False
    assert len(fake_dib.calls) == 1  # the layer's own DIB run
    private = first.staging / layer_steps.LAYER_IMAGE_CACHE
    # DIB's debootstrap element extracts an empty tarball; the extract hook, the layer.
    assert _empty_tarball(private / "debootstrap-debian-bookworm-amd64.tar.gz")
    tarball = private / LAYER_IN_CACHE
    assert _layer_members(tarball) == ["./etc/motd", "./proc/", "./sys/"]
    assert not (first.staging / layer_steps.LAYER_WORK).exists()

    second = _ctx(tmp_path)
    layer_steps.prepare_layer(second)
    assert second.layer is not None
    assert second.layer == {**first.layer, "hit": True}
    assert len(fake_dib.calls) == 1  # not built again
    # Not copied: a link to the descriptor the layer step opened and checked,
    # the cache entry's own inode.
    again = second.staging / layer_steps.LAYER_IMAGE_CACHE / tarball.name
    assert second.layer_fd is not None
    assert os.readlink(again) == f"/proc/{os.getpid()}/fd/{second.layer_fd}"
    stored = tmp_path / "cache" / "layers" / second.layer["key"] / LAYER_FILE
    assert os.stat(again).st_ino == os.stat(stored).st_ino == os.fstat(second.layer_fd).st_ino
    assert again.read_bytes() == tarball.read_bytes()

    # The recipe's own DIB run starts from it: the private image cache, with the
    # slot's apt cache linked in.
    pipeline.run_dib(second)
    env = fake_dib.calls[-1]
    assert env["DIB_IMAGE_CACHE"] == str(second.staging / layer_steps.LAYER_IMAGE_CACHE)
    assert env["DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE"] == "1"
    argv_elements = fake_dib.argv[-1][fake_dib.argv[-1].index("imagefactory-recipe") :]
    assert argv_elements == ["imagefactory-recipe", EXTRACT_ELEMENT]
    hook = (second.need_element().root / EXTRACT_ELEMENT / EXTRACT_HOOK).read_text()
    assert f'layer="$DIB_IMAGE_CACHE/{LAYER_IN_CACHE}"' in hook
    assert "layerattrs" not in hook  # the tree has no extended attributes
    assert not (second.staging / layer_steps.LAYER_IMAGE_CACHE).exists()  # removed after DIB
    assert fake_dib.layer_seen == tarball.read_bytes()  # the child's run read the layer
    assert second.layer_fd is None  # closed once DIB is done


def test_a_failed_dib_run_closes_the_layers_descriptor(tmp_path: Path, fake_dib: FakeDib) -> None:
    layer_steps.prepare_layer(_ctx(tmp_path))
    ctx = _ctx(tmp_path)
    layer_steps.prepare_layer(ctx)
    fd = ctx.layer_fd
    assert fd is not None
    fake_dib.fail = True
    with pytest.raises(ImageFactoryError):
        pipeline.run_dib(ctx)
    assert ctx.layer_fd is None
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_a_changed_layer_entry_is_never_used(tmp_path: Path, fake_dib: FakeDib) -> None:
    first = _ctx(tmp_path)
    layer_steps.prepare_layer(first)
    assert first.layer is not None
    stored = tmp_path / "cache" / "layers" / first.layer["key"] / LAYER_FILE
    os.chmod(stored, 0o644)
    with stored.open("r+b") as f:  # same size, other bytes
        f.write(b"\0" * 16)
    second = _ctx(tmp_path)
    layer_steps.prepare_layer(second)
    assert second.layer is not None
    assert second.layer["hit"] is False  # evicted and built again
    assert len(fake_dib.calls) == 2
    assert _layer_members(second.staging / layer_steps.LAYER_IMAGE_CACHE / LAYER_IN_CACHE)[0] == (
        "./etc/motd"
    )


def test_a_refused_tree_is_cached_as_refused(tmp_path: Path, fake_dib: FakeDib) -> None:
    fake_dib.xattrs = {"SCHILY.xattr.security.selinux": "system_u:object_r:etc_t"}
    first = _ctx(tmp_path)
    layer_steps.prepare_layer(first)
    assert first.layer is not None
    assert first.layer["used"] is False
    assert "security.selinux" in first.layer["reason"]
    second = _ctx(tmp_path)
    layer_steps.prepare_layer(second)
    assert second.layer is not None
    assert second.layer["used"] is False
    assert second.layer["reason"] == first.layer["reason"]
    assert len(fake_dib.calls) == 1  # not built again to be refused again
    pipeline.run_dib(second)  # a full build: the slot's image cache, no extract hook
    assert fake_dib.calls[-1]["DIB_IMAGE_CACHE"] == str(tmp_path / "cache" / "dib")
    assert EXTRACT_ELEMENT not in fake_dib.argv[-1]


def test_no_layer_cache_is_a_full_build(tmp_path: Path, fake_dib: FakeDib) -> None:
    ctx = _ctx(tmp_path, use_layer=False)
    layer_steps.prepare_layer(ctx)
    assert ctx.layer == {"used": False, "reason": "not asked for (--no-layer-cache)"}
    assert fake_dib.calls == []
    assert not (tmp_path / "cache" / "layers").exists()


def test_the_layers_acls_are_set_again_by_a_hook_of_the_childs_run(
    tmp_path: Path, fake_dib: FakeDib
) -> None:
    fake_dib.xattrs = {"SCHILY.xattr.system.posix_acl_access": "\x02\x00"}
    for n in range(2):  # built, then cached: the hook both times
        ctx = _ctx(tmp_path)
        layer_steps.prepare_layer(ctx)
        assert ctx.layer is not None
        assert (ctx.layer["used"], ctx.layer["hit"], ctx.layer["attrs"]) == (True, n == 1, 1)
        element = ctx.need_element().root / EXTRACT_ELEMENT
        attrs = json.loads((element / ATTRS_FILE).read_text())
        assert attrs == [["etc/motd", "system.posix_acl_access", "AgA="]]
        assert os.access(element / EXTRACT_HOOK, os.X_OK)
        assert "-m imagefactory.builder.layerattrs" in (element / EXTRACT_HOOK).read_text()
        pipeline.run_dib(ctx)
        argv_elements = fake_dib.argv[-1][fake_dib.argv[-1].index("imagefactory-recipe") :]
        assert argv_elements == ["imagefactory-recipe", EXTRACT_ELEMENT]
