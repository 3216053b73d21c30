"""The gate for Xen: xl domain configurations and libvirt's libxl hook."""

from __future__ import annotations

import subprocess
from pathlib import Path

from imagefactory.gate.disks import DiskRequest
from imagefactory.gate.libvirt import run_hook
from imagefactory.gate.xl import parse_disk_spec, xl_disks
from tests.gate.conftest import config
from tests.gate.test_gate_qemu import RAW, _gate_cli

XEN_DOMAIN = """<domain type='xen'><name>wn</name><memory>1048576</memory>
<os><type>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/>
<source file='{path}'><seclabel model='dac' relabel='no'/></source>\
<target dev='xvda' bus='xen'/></disk>
</devices></domain>"""


def _cfg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wn.cfg"
    path.write_text(text)
    return path


def test_disk_spec_key_value_form() -> None:
    assert parse_disk_spec("format=qcow2, vdev=xvda, access=rw, target=/s/a,b.qcow2") == (
        "/s/a,b.qcow2",  # target= takes the rest, commas included
        "qcow2",
        None,
    )
    assert parse_disk_spec("vdev=xvdc, devtype=cdrom") == (None, None, None)


def test_disk_spec_forms_that_are_refused() -> None:
    assert "positional" in (parse_disk_spec("/s/a.raw,raw,xvda,rw")[2] or "")
    assert "dom0" in (parse_disk_spec("format=raw, script=block-iscsi, target=x")[2] or "")
    assert "no target" in (parse_disk_spec("format=raw, vdev=xvda")[2] or "")


def test_xl_config_disks_comments_and_multiline(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        'name = "wn"\n# disk = ["format=raw, target=/etc/shadow"]\n'
        "disk = [ 'format=raw, vdev=xvda, target=/s/a.raw',  # the root disk\n"
        '         "format=qcow2, vdev=xvdb, target=/s/b # not a comment.qcow2" ]\n',
    )
    disks, refusals = xl_disks(["xl", "create", "-q", str(cfg)])
    assert refusals == []
    assert disks == [
        DiskRequest("/s/a.raw", "raw", "disk #1"),
        DiskRequest("/s/b # not a comment.qcow2", "qcow2", "disk #2"),
    ]


def test_xl_unverified_boot_and_overrides_are_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 'bootloader = "pygrub"\ndisk = ["format=raw, target=/s/a.raw"]\n')
    _, refusals = xl_disks(["xl", "create", "-f", str(cfg), 'disk=["target=/x"]'])
    assert [r.code for r in refusals] == ["gate-refused-option", "gate-direct-kernel"]
    _, refusals = xl_disks(["xl", "destroy", "wn"])
    assert [r.code for r in refusals] == ["gate-invalid-request"]
    twice = _cfg(tmp_path, 'disk = ["format=raw, target=/a"]\ndisk = []\n')
    assert "more than once" in xl_disks(["xl", "create", str(twice)])[1][0].message
    code = _cfg(tmp_path, "disk = [__import__('os').system('id')]\n")
    assert "not xl configuration syntax" in xl_disks(["xl", "create", str(code)])[1][0].message


def test_libxl_hook_checks_a_xen_domain(store: Path) -> None:
    good = XEN_DOMAIN.format(path=store / "good" / RAW).encode()
    assert run_hook(["wn", "prepare", "begin", "-"], good, lambda: config(store)) == (0, "")
    bad = XEN_DOMAIN.format(path=store / "bad" / RAW).encode()
    code, message = run_hook(["wn", "prepare", "begin", "-"], bad, lambda: config(store))
    assert code == 1
    assert "unsigned" in message


def _gate_xl(store: Path, tmp_path: Path, disk: Path) -> subprocess.CompletedProcess[str]:
    xl = tmp_path / "bin" / "xl"  # a stand-in xl that shows what it was given
    xl.parent.mkdir()
    xl.write_text('#!/bin/sh\necho "xl $*"\n')
    xl.chmod(0o755)
    cfg = _cfg(tmp_path, f'disk = ["format=raw, vdev=xvda, target={disk}"]\n')
    return _gate_cli(store, str(xl), "create", str(cfg))


def test_gate_cli_runs_xl_create_when_the_disks_pass(store: Path, tmp_path: Path) -> None:
    done = _gate_xl(store, tmp_path, store / "good" / RAW)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("xl create ")


def test_gate_cli_refuses_xl_create_of_an_unsigned_disk(store: Path, tmp_path: Path) -> None:
    done = _gate_xl(store, tmp_path, store / "bad" / RAW)
    assert done.returncode == 1
    assert "unsigned" in done.stderr
    assert "xl create" not in done.stdout
