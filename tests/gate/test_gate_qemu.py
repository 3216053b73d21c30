"""The boot gate without libvirtd: disk mapping, domain XML and qemu argv parsing, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagefactory.boot.qemu import qemu_argv
from imagefactory.gate.check import GateConfig, GateResult, check_disks
from imagefactory.gate.disks import DiskRequest
from imagefactory.gate.keyval import parse_keyval
from imagefactory.gate.libvirt import domain_disks, run_hook
from imagefactory.gate.qemu import qemu_disks
from imagefactory.instances.make import make_overlay
from imagefactory.vocab import Arch
from tests.conftest import REPO
from tests.fakes import diskimages as fx
from tests.fakes.imagedirs import make_image
from tests.gate.conftest import config

RAW = "atlas-wn-debian12-1.0.raw"
needs_qemu_img = pytest.mark.skipif(fx.QEMU_IMG is None, reason="qemu-img is not installed")


def gate(store: Path, *disks: DiskRequest) -> GateResult:
    return check_disks(disks, config(store))


def codes(result: GateResult) -> list[str]:
    return [r.code for r in result.refusals] + [
        code for v in result.verdicts.values() for code in v.codes
    ]


def test_signed_image_disk_passes(store: Path) -> None:
    result = gate(store, DiskRequest(str(store / "good" / RAW), "raw", "vda"))
    assert result.allowed, result.render("test")


def test_unsigned_image_disk_is_refused(store: Path) -> None:
    result = gate(store, DiskRequest(str(store / "bad" / RAW), "raw", "vda"))
    assert codes(result) == ["unsigned"]
    assert "image" in result.render("domain x")


def test_disk_outside_the_store_is_refused(store: Path, tmp_path: Path) -> None:
    outside = make_image(tmp_path, "outside")
    result = gate(store, DiskRequest(str(outside / RAW), "raw", "vda"))
    assert codes(result) == ["gate-outside-store"]


def test_disk_opened_in_another_format_than_signed(store: Path) -> None:
    result = gate(store, DiskRequest(str(store / "good" / RAW), "qcow2", "vda"))
    assert codes(result) == ["gate-format-mismatch"]


def test_disk_without_format_would_be_probed(store: Path) -> None:
    result = gate(store, DiskRequest(str(store / "good" / RAW), None, "vda"))
    assert codes(result) == ["gate-format-mismatch"]


def test_stray_file_is_unverifiable(store: Path) -> None:
    stray = store / "stray.raw"
    stray.write_bytes(b"\0" * 4096)
    assert codes(gate(store, DiskRequest(str(stray), "raw", "vda"))) == ["gate-unverifiable-disk"]


def _overlay(path: Path, backing: str, backing_format: str | None) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-u"]
    argv += ["-F", backing_format] if backing_format else []
    subprocess.run([*argv, str(path), "64K"], check=True)
    return path


@needs_qemu_img
def test_overlay_over_a_store_image_passes(store: Path, tmp_path: Path) -> None:
    overlay = make_overlay(store / "good", store.parent / "run", "vm1")
    result = gate(store, DiskRequest(str(overlay), "qcow2", "vda"))
    assert result.allowed, result.render("test")
    assert list(result.verdicts) == [store / "good"]


@needs_qemu_img
def test_overlay_over_an_unsigned_image_is_refused(store: Path, tmp_path: Path) -> None:
    overlay = make_overlay(store / "bad", store.parent / "run", "vm1")
    assert codes(gate(store, DiskRequest(str(overlay), "qcow2", "vda"))) == ["unsigned"]


def test_overlay_backing_host_file_is_refused(store: Path, tmp_path: Path) -> None:
    """An overlay pointing at /etc/shadow: read through diskformat's parser, never opened."""
    overlay = fx.write(tmp_path / "evil.qcow2", fx.qcow2(size=1 << 20, backing=b"/etc/shadow"))
    assert codes(gate(store, DiskRequest(str(overlay), "qcow2", "vda"))) == ["gate-outside-store"]


def test_overlay_backing_through_dotdot_out_of_store(store: Path) -> None:
    overlay = fx.write(store / "evil.qcow2", fx.qcow2(size=1 << 20, backing=b"../../etc/shadow"))
    assert codes(gate(store, DiskRequest(str(overlay), "qcow2", "vda"))) == ["gate-overlay"]


def test_overlay_backing_url_is_refused(store: Path, tmp_path: Path) -> None:
    overlay = fx.write(tmp_path / "evil.qcow2", fx.qcow2(size=1 << 20, backing=b"nbd://host/x"))
    assert codes(gate(store, DiskRequest(str(overlay), "qcow2", "vda"))) == ["gate-overlay"]


def test_overlay_without_backing_format_is_refused(store: Path, tmp_path: Path) -> None:
    """qemu would probe the base's format: a raw base holding a qcow2 header would win."""
    base = str(store / "good" / RAW).encode()
    overlay = fx.write(tmp_path / "vm1.qcow2", fx.qcow2(size=1 << 20, backing=base))
    assert codes(gate(store, DiskRequest(str(overlay), "qcow2", "vda"))) == ["gate-format-mismatch"]


# -- domain XML ------------------------------------------------------------------

DOMAIN = """<domain type='qemu'><name>vm</name><os><type>hvm</type>{os}</os><devices>
{disks}</devices></domain>"""


def disk_xml(path: str, fmt: str = "raw", kind: str = "file", dev: str = "vda") -> str:
    attr = "file" if kind == "file" else "dev"
    return (
        f"<disk type='{kind}' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source {attr}='{path}'><seclabel model='dac' relabel='no'/></source>"
        f"<target dev='{dev}'/></disk>"
    )


def test_domain_disks_are_read_from_xml() -> None:
    xml = DOMAIN.format(
        os="",
        disks=disk_xml("/s/a.raw")
        + disk_xml("/dev/sdb", "raw", "block", "vdb")
        + "<disk type='file' device='cdrom'><target dev='hdc'/></disk>",
    )
    disks, refusals = domain_disks(xml)
    assert refusals == []
    assert disks == [
        DiskRequest("/s/a.raw", "raw", "disk vda"),
        DiskRequest("/dev/sdb", "raw", "disk vdb"),
    ]


def test_domain_network_disk_and_direct_kernel_are_refused() -> None:
    xml = DOMAIN.format(
        os="<kernel>/boot/vmlinuz</kernel>",
        disks="<disk type='network' device='disk'><source protocol='nbd' name='x'/>"
        "<target dev='vda'/></disk>",
    )
    disks, refusals = domain_disks(xml)
    assert disks == []
    codes = [r.code for r in refusals]
    assert codes[0] == "gate-direct-kernel"
    assert {"gate-refused-option", "gate-unverifiable-disk"} <= set(codes)


def test_domain_xml_with_dtd_is_refused() -> None:
    xml = '<!DOCTYPE d [<!ENTITY a "aaaa">]><domain>&a;</domain>'
    assert [r.code for r in domain_disks(xml)[1]] == ["gate-invalid-request"]


def test_hook_lets_other_operations_through(store: Path) -> None:
    def no_config() -> GateConfig:
        raise AssertionError("only prepare needs the configuration")

    assert run_hook(["vm", "release", "end", "-"], b"<domain/>", no_config) == (0, "")
    assert run_hook(["vm", "started", "begin", "-"], b"", no_config) == (0, "")


def test_hook_refuses_unsigned_disk_with_reasons(store: Path) -> None:
    good = DOMAIN.format(os="", disks=disk_xml(str(store / "good" / RAW)))
    assert run_hook(["vm", "prepare", "begin", "-"], good.encode(), lambda: config(store)) == (
        0,
        "",
    )
    bad = DOMAIN.format(os="", disks=disk_xml(str(store / "bad" / RAW)))
    code, message = run_hook(["vm", "prepare", "begin", "-"], bad.encode(), lambda: config(store))
    assert code == 1
    assert message.startswith("imagefactory gate: refusing domain vm:")
    assert "unsigned" in message


# -- qemu command lines ----------------------------------------------------------


def test_boot_test_command_line_is_understood(tmp_path: Path) -> None:
    argv = qemu_argv(tmp_path / "d.qcow2", "qcow2", Arch.X86_64, "tcg")
    assert qemu_disks(argv) == ([DiskRequest(str(tmp_path / "d.qcow2"), "qcow2", "-drive #1")], [])


def test_qemu_options_that_probe_or_bypass_are_refused() -> None:
    argv = ["qemu", "-hda", "/x.img", "-kernel", "/vmlinuz", "-readconfig", "/c", "-m", "1G"]
    disks, refusals = qemu_disks(argv)
    assert disks == []
    assert [r.code for r in refusals] == [
        "gate-format-mismatch",
        "gate-direct-kernel",
        "gate-refused-option",
    ]


def test_qemu_blockdev_is_refused() -> None:
    """-blockdev graphs are not bound to descriptors by the gate: refused by name, use -drive."""
    file_node = {"driver": "file", "filename": "/s/a.raw", "node-name": "f1"}
    argv = ["qemu", "-blockdev", json.dumps(file_node), "--blockdev", "driver=raw,file=f1"]
    argv += ["-drive", "file=json:{},format=raw"]
    disks, refusals = qemu_disks(argv)
    assert disks == []
    assert [r.code for r in refusals] == ["gate-refused-option"] * 3


def test_split_options_escaped_comma() -> None:
    assert parse_keyval("file=/a,,b.raw,format=raw,readonly=on") == {
        "file": "/a,b.raw",
        "format": "raw",
        "readonly": "on",
    }


def _gate_cli(store: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """``imagefactory gate -- COMMAND``, with settings naming COMMAND's program as a hypervisor."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    settings = store.parent / "settings.yaml"
    settings.write_text(json.dumps({"gate": {"hypervisors": [command[0]]}}))
    argv = [sys.executable, "-m", "imagefactory", "gate", "--settings", str(settings)]
    argv += ["--policy", str(store.parent / "site.yaml")]
    argv += ["--store", str(store), "--cache", str(store.parent / "cache"), "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


def test_gate_cli_runs_the_command_when_its_disks_pass(store: Path) -> None:
    """The command runs with the disk as a descriptor it inherited, not the path."""
    drive = f"file={store / 'good' / RAW},format=raw,readonly=on"
    done = _gate_cli(store, "/bin/echo", "-drive", drive)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[:3] == ["-nodefaults", "-no-user-config", "-add-fd"]
    assert words[3].startswith("fd=")
    assert words[3].endswith(",set=1,opaque=rdonly")
    assert words[4:] == ["-drive", "file=/dev/fdset/1,format=raw,readonly=on"]


def test_gate_cli_refuses_without_running_the_command(store: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    drive = f"file={store / 'bad' / RAW},format=raw,readonly=on"
    done = _gate_cli(store, "/bin/touch", "-drive", drive)
    assert done.returncode == 1
    assert "unsigned" in done.stderr
    assert not marker.exists()


def test_gate_cli_runs_only_hypervisors_named_in_settings(store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({"gate": {"hypervisors": ["/usr/bin/qemu-system-x86_64"]}}))
    marker = tmp_path / "ran"
    argv = [sys.executable, "-m", "imagefactory", "gate", "--settings", str(settings)]
    argv += ["--policy", str(store.parent / "site.yaml"), "--store", str(store)]
    argv += ["--", "touch", str(marker)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "not a hypervisor the settings name" in done.stderr
    assert not marker.exists()
