"""``imagefactory run``: the gate's own fixed command line for a verified store image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.qemu import parse_qemu
from imagefactory.gate.start import StartOptions, start_argv
from tests.conftest import REPO
from tests.gate.conftest import Store


def test_start_argv_is_fixed_and_passes_the_gate(images: Store) -> None:
    argv = start_argv(images.good.parent, StartOptions("tcg", 512, 1, network=True, name="wn1"))
    assert argv[0] == "qemu-system-x86_64"
    assert f"file={images.good},format=raw,if=virtio,snapshot=on" in argv
    assert "-kernel" not in argv
    assert "-bios" not in argv
    with bind_qemu(parse_qemu(argv), images.config) as bound:
        assert bound.result.allowed, bound.result.render("t")
        assert "file=/dev/fdset/1,format=raw,if=virtio,snapshot=on" in bound.argv
        assert "virtio-net-pci,netdev=net0,romfile=" in bound.argv


def _run_cli(images: Store, tmp_path: Path, image: Path) -> subprocess.CompletedProcess[str]:
    """``imagefactory run`` with a stand-in qemu-system-x86_64 that prints its argv."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text('#!/bin/sh\necho "$*"\n')
    qemu.chmod(0o755)
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        json.dumps({"build": {"accel": "tcg"}, "gate": {"hypervisors": [str(qemu)]}})
    )
    argv = [sys.executable, "-m", "imagefactory", "run", "--settings", str(settings)]
    argv += ["--policy", str(images.root.parent / "site.yaml"), "--store", str(images.root)]
    argv += ["--cache", str(tmp_path / "cache"), "--no-network", str(image)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{bindir}:{os.environ['PATH']}"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


def test_run_cli_execs_qemu_with_the_disk_as_a_descriptor(images: Store, tmp_path: Path) -> None:
    done = _run_cli(images, tmp_path, images.good.parent)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[:3] == ["-nodefaults", "-no-user-config", "-add-fd"]
    assert "file=/dev/fdset/1,format=raw,if=virtio,snapshot=on" in words
    assert str(images.good) not in done.stdout


def test_run_cli_refuses_an_unsigned_image(images: Store, tmp_path: Path) -> None:
    done = _run_cli(images, tmp_path, images.bad.parent)
    assert done.returncode == 1
    assert "unsigned" in done.stderr
    assert done.stdout == ""


def test_run_cli_reports_a_broken_image_dir_without_traceback(
    images: Store, tmp_path: Path
) -> None:
    (images.good.parent / "labels.json").write_text("[" * 100000)
    done = _run_cli(images, tmp_path, images.good.parent)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
