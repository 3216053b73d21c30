"""The xl gate: libxlu's grammar and xl's getopt, one test per bypass class of issue 10."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imagefactory.gate.xl import parse_xl
from imagefactory.gate.xlcfg import XlConfigError, parse_xl_config
from tests.conftest import REPO
from tests.gate.conftest import Store

GOOD = 'name = "wn"\ntype = "hvm"\nmemory = 1024\ndisk = ["format=raw, vdev=xvda, target={disk}"]\n'


def cfg(tmp_path: Path, text: str, name: str = "wn.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def codes(argv: list[str]) -> list[str]:
    return [r.code for r in parse_xl(argv).refusals]


def test_libxlu_grammar() -> None:
    text = "a = 1; b = 'x' # c\nc = [ 'p',\n  \"q\", ]\nd = 0x10\ne = [[1], []]\n"
    assert parse_xl_config(text) == {"a": 1, "b": "x", "c": ["p", "q"], "d": 16, "e": [[1], []]}


@pytest.mark.parametrize(
    "text",
    [
        'disk = ["a"]\ndisk += ["b"]\n',  # += appends
        "disk = []\ndisk = []\n",  # set twice
        'k = "a\\"b"\n',  # a backslash escape
        "Name = 1\n",  # xl's names are lowercase
        "a = 1 b = 2\n",  # two statements without ; or newline
        'a = "x\ny"\n',  # a string over two lines
        "a = [1, 2\n",  # unterminated list
    ],
)
def test_config_read_differently_by_xl_is_refused(text: str) -> None:
    with pytest.raises(XlConfigError):
        parse_xl_config(text)


def test_semicolon_separated_statement_is_read(tmp_path: Path) -> None:
    """``disk = [...]; kernel = ...`` on one line: the second statement counts."""
    path = cfg(tmp_path, 'disk = ["format=raw, target=/s/a.raw"]; kernel = "/tmp/vmlinuz"\n')
    assert codes(["xl", "create", str(path)]) == ["gate-direct-kernel"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ('device_model_args = ["-incoming", "exec:sh"]', "gate-refused-option"),
        ('device_model_override = "/tmp/qemu"', "gate-refused-option"),
        ('bootloader = "pygrub"', "gate-direct-kernel"),
        ('ramdisk = "/tmp/initrd"', "gate-direct-kernel"),
        ('firmware = "/tmp/evil.bin"', "gate-refused-option"),
        ('pci = ["01:00.0"]', "gate-refused-option"),
        ('boot = "n"', "gate-refused-option"),
        ('vif = ["bridge=br0, script=/tmp/evil.sh"]', "gate-refused-option"),
        ("frobnicate = 1", "gate-refused-option"),
    ],
)
def test_boot_code_and_unknown_settings_are_refused(tmp_path: Path, line: str, code: str) -> None:
    path = cfg(tmp_path, f'disk = ["format=raw, target=/s/a.raw"]\n{line}\n')
    assert codes(["xl", "create", str(path)]) == [code]


def test_extra_key_value_arguments_are_refused(tmp_path: Path) -> None:
    path = cfg(tmp_path, 'disk = ["format=raw, target=/s/a.raw"]\n')
    assert codes(["xl", "create", str(path), 'disk=["target=/etc/shadow"]']) == [
        "gate-refused-option"
    ]


def test_defconfig_is_refused(tmp_path: Path) -> None:
    path = cfg(tmp_path, 'disk = ["format=raw, target=/s/a.raw"]\n')
    other = cfg(tmp_path, 'kernel = "/tmp/vmlinuz"\n', "other.cfg")
    assert "gate-refused-option" in codes(["xl", "create", f"--defconfig={other}", str(path)])


def test_f_equals_names_a_file_called_equals(tmp_path: Path) -> None:
    """getopt reads ``-f=FILE`` as the file ``=FILE``, so does the gate (it does not exist)."""
    path = cfg(tmp_path, 'disk = ["format=raw, target=/s/a.raw"]\n')
    command = parse_xl(["xl", "create", f"-f={path}"])
    assert command.config_path == f"={path}"
    assert [r.code for r in command.refusals] == ["gate-invalid-request"]
    assert parse_xl(["xl", "create", f"-qf{path}"]).config_path == str(path)


def test_fifo_config_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "wn.cfg"
    os.mkfifo(fifo)
    result: list[list[str]] = []
    worker = threading.Thread(
        target=lambda: result.append(codes(["xl", "create", str(fifo)])), daemon=True
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the gate blocked on a FIFO")
    assert result == [["gate-invalid-request"]]


def test_disk_spec_keys_are_allowlisted(tmp_path: Path) -> None:
    path = cfg(tmp_path, 'disk = ["format=raw, backend=evil, target=/s/a.raw"]\n')
    assert codes(["xl", "create", str(path)]) == ["gate-unverifiable-disk"]


def test_xl_gets_the_bytes_the_gate_checked(images: Store, tmp_path: Path) -> None:
    """The stand-in xl reads its -f file: a sealed copy, not the (since replaced) path."""
    path = cfg(tmp_path, GOOD.format(disk=images.good))
    xl = tmp_path / "bin" / "xl"
    xl.parent.mkdir()
    # Replace the config the moment xl starts, then show what xl reads from its -f.
    xl.write_text(f'#!/bin/sh\necho \'kernel = "/tmp/evil"\' > {path}\necho "$*"\ncat "$4"\n')
    xl.chmod(0o755)
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"gate": {"hypervisors": [str(xl)]}}))
    argv = [sys.executable, "-m", "imagefactory", "gate", "--settings", str(settings)]
    argv += ["--policy", str(images.root.parent / "site.yaml"), "--store", str(images.root)]
    argv += ["--cache", str(tmp_path / "cache"), "--", str(xl), "create", "-p", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    first, _, rest = done.stdout.partition("\n")
    assert first.startswith("create -p -f /proc/self/fd/")
    assert rest == GOOD.format(disk=images.good)
    assert "evil" in path.read_text()
