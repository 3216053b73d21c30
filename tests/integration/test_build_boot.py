"""The build stage for real: diskimage-builder builds the example recipe, the
disk is assembled, qemu boots it, the cache serves it again."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagefactory import cli
from imagefactory.builder import pipeline
from imagefactory.builder.cache import file_digest
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.pipeline import BuildResult
from imagefactory.diskformat import check_safe
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import Settings
from tests.conftest import REPO
from tests.integration_images import EXAMPLE, Builder

pytestmark = pytest.mark.integration


def test_example_build_publishes_disk_record_and_logs(example_build: BuildResult) -> None:
    directory = example_build.directory
    assert example_build.published
    assert not example_build.cache_hit
    assert sorted(p.name for p in directory.iterdir()) == [
        "atlas-wn-debian12-1.0.qcow2",
        "audit.json",
        "boot-test.log",
        "build.json",
        "build.log",
        "labels.json",
        "sbom.cdx.json",
    ]
    disk = directory / "atlas-wn-debian12-1.0.qcow2"
    info = check_safe(disk, declared_format="qcow2")
    assert info.virtual_size == 2 * 1024**3  # the site base's disk.size

    record = json.loads((directory / "build.json").read_text())
    recipe = load_recipe(EXAMPLE)
    assert record["recipe"]["digest"] == recipe.digest
    assert record["recipe"]["resolved"] == recipe.canonical()
    assert record["disk"]["files"]["atlas-wn-debian12-1.0.qcow2"]["sha256"] == file_digest(disk)
    assert record["disk"]["kernel"].endswith("-amd64")
    assert {"diskimage-builder", "debootstrap", "qemu-utils"} <= set(record["tools"])
    assert set(record["timings"]) >= {"dib", "assemble", "boot-test", "total"}
    installed = {p["name"] for p in record["packages"]}
    # The base's packages, the VO recipe's packages, and what makes it boot.
    assert {"chrony", "auditd", "python3-minimal", "bzip2", "grub-pc"} <= installed
    assert record["boot_test"]["passed"] is True
    assert not [p for p in directory.parent.parent.iterdir() if p.name.startswith(".staging")]


def test_example_image_really_booted_to_a_login_prompt(example_build: BuildResult) -> None:
    console = (example_build.directory / "boot-test.log").read_text(errors="replace")
    assert "Linux version" in console  # the image's own kernel, from its own GRUB
    assert "login:" in console


def test_unchanged_recipe_is_served_from_the_cache(
    example_build: BuildResult, build_recipe: Builder, tmp_path: Path
) -> None:
    again = build_recipe(EXAMPLE, tmp_path)
    assert again.cache_hit
    assert again.published
    first = example_build.record["disk"]["files"]
    assert again.record["disk"]["files"] == first
    assert again.record["boot_test"]["passed"] is True
    assert again.record["timings"]["total"] < example_build.record["timings"]["total"]


def test_a_rebuild_into_its_own_output_copies_nothing_until_that_output_changes(
    example_build: BuildResult, build_recipe: Builder, tmp_path: Path
) -> None:
    """'Already up to date' by the identities recorded at publish, on the real pipeline."""
    made = build_recipe(EXAMPLE, tmp_path)  # a hit into a fresh output: one copy
    (name,) = made.record["disk"]["files"]
    disk = made.directory / name
    inode = disk.stat().st_ino
    again = build_recipe(EXAMPLE, tmp_path)
    assert again.cache_hit
    assert not again.published  # up to date: nothing copied, the output kept
    assert disk.stat().st_ino == inode
    os.chmod(disk, 0o644)  # the output changed since it was published (a chmod is enough)
    repaired = build_recipe(EXAMPLE, tmp_path)
    assert repaired.cache_hit
    assert repaired.published  # made again from the cache
    assert disk.stat().st_ino != inode
    assert disk.stat().st_mode & 0o777 == 0o444
    assert file_digest(disk) == example_build.record["disk"]["files"][name]["sha256"]


def test_a_changed_recipe_misses_the_cache(
    example_build: BuildResult, build_settings: Settings, tmp_path: Path
) -> None:
    """Same pipeline steps up to the cache lookup, with one label changed."""
    changed = tmp_path / "recipes"
    changed.mkdir()
    for name in ("site-base-debian12.yaml", "atlas-wn-debian12.yaml"):
        (changed / name).write_text((EXAMPLE.parent / name).read_text())
    shutil.copytree(EXAMPLE.parent / "files", changed / "files")
    with (changed / "atlas-wn-debian12.yaml").open("a") as f:
        f.write("  campaign: mc23\n")  # one more free-form label
    keys = []
    for path in (EXAMPLE, changed / "atlas-wn-debian12.yaml"):
        ctx = BuildContext(
            recipe=load_recipe(path, build_settings.build_limits()),
            settings=build_settings,
            options=BuildOptions(),
            progress=Progress(stream=io.StringIO()),
            staging=tmp_path / path.parent.name,
            logfile=io.StringIO(),
        )
        ctx.staging.mkdir(exist_ok=True)
        for step in pipeline.STEPS[: [s.name for s in pipeline.STEPS].index("cache") + 1]:
            step.run(ctx)
        keys.append((ctx.key, ctx.hit is not None))
    assert keys[0] == (example_build.record["cache"]["key"], True)
    assert keys[1][0] != keys[0][0]
    assert keys[1][1] is False


def test_boot_test_command_passes_the_built_image(
    example_build: BuildResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = example_build.directory / "atlas-wn-debian12-1.0.qcow2"
    console = tmp_path / "console.log"
    argv = ["boot-test", str(disk), "--format", "qcow2", "--console-log", str(console)]
    assert cli.main([*argv, "--json", "--timeout", "600"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] is True
    assert "login:" in console.read_text(errors="replace")


def test_boot_test_command_fails_an_image_that_does_not_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "blank.raw"
    with blank.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    console = tmp_path / "console.log"
    # A file with no partition table and no file system is refused before qemu starts.
    argv = ["boot-test", str(blank), "--format", "raw", "--console-log", str(console)]
    assert cli.main([*argv, "--timeout", "20"]) == 1
    assert "not a disk image" in capsys.readouterr().err
    assert not console.exists()
    # An MBR with a boot signature but no boot code is a disk that does not boot.
    disk = tmp_path / "no-boot-code.raw"
    with disk.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
        f.seek(510)
        f.write(b"\x55\xaa")
    argv = ["boot-test", str(disk), "--format", "raw", "--console-log", str(console)]
    assert cli.main([*argv, "--timeout", "20"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL: {disk}: no marker")
    assert console.exists()


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line for line in f if str(path) in line]


@pytest.mark.usefixtures("sigint_default")  # the build it starts must hear Ctrl-C
def test_interrupted_build_leaves_no_image_staging_or_mounts(
    build_settings: Settings, tmp_path: Path
) -> None:
    """Ctrl-C while diskimage-builder works in its chroot (its mounts exist)."""
    output = tmp_path / "images"  # DIB's work directories and mounts live in here
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "imagefactory").symlink_to(build_settings.cache_dir)
    argv = [
        sys.executable,
        "-m",
        "imagefactory",
        "build",
        str(EXAMPLE),
        "--no-cache",
        "--output",
        str(output),
    ]
    with (tmp_path / "build.out").open("w+") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not _mounts_under(output) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # well inside the chroot phase
        mounted = _mounts_under(output)
        proc.send_signal(signal.SIGINT)
        returncode = proc.wait(timeout=300)
        out.seek(0)
        log = out.read()
    assert mounted, "expected DIB's chroot mounts while it runs:\n" + log
    assert returncode == 130, log
    assert "interrupted" in log
    assert not (output / "atlas-wn-debian12").exists()
    assert [p.name for p in output.iterdir() if p.name.startswith(".staging")] == []
    assert _mounts_under(output) == []
