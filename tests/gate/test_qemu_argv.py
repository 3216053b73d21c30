"""The qemu argv gate, one test per class of bypass found in issue 10 (no qemu run here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.check import GateResult
from imagefactory.gate.keyval import KeyvalError, parse_keyval
from imagefactory.gate.qemu import parse_qemu
from imagefactory.gate.text import shown
from imagefactory.instances.make import make_overlay
from tests.fakes import diskimages as fx
from tests.gate.conftest import Store

QEMU = "/usr/bin/qemu-system-x86_64"


def refused(*args: str) -> list[str]:
    """The refusal codes of ``qemu ARGS``; asserts it is refused."""
    command = parse_qemu([QEMU, *args])
    assert command.refusals, f"accepted: {args}"
    return [r.code for r in command.refusals]


def accepted(*args: str) -> None:
    command = parse_qemu([QEMU, *args])
    assert command.refusals == [], [r.message for r in command.refusals]


def gate(images: Store, *args: str) -> GateResult:
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        return bound.result


def test_keyval_reads_as_both_qemu_readers() -> None:
    assert parse_keyval("a=1,,2,b=x", None) == {"a": "1,2", "b": "x"}
    assert parse_keyval("virtio-blk-pci,drive=d0", "driver")["driver"] == "virtio-blk-pci"
    for bad in ("readonly", "noreadonly=x,a", "a=1,a=2", "file.filename=/x", '{"a":1}', "a=help"):
        with pytest.raises(KeyvalError):
            parse_keyval(bad, None)


def test_boot_test_style_command_is_accepted() -> None:
    accepted(
        "-accel", "tcg", "-m", "1024", "-smp", "2", "-nodefaults", "-display", "none",
        "-no-reboot", "-serial", "stdio", "-nic", "none",
        "-drive", "file=/s/x.qcow2,format=qcow2,if=virtio,snapshot=on",
    )  # fmt: skip


def test_bypass_positional_disk() -> None:
    assert refused("/store/evil.img") == ["gate-format-mismatch"]


def test_bypass_option_swallowing_the_next_word() -> None:
    """-name takes the next word whatever it is; -S takes none: the disk after it is seen."""
    assert refused("-name", "-hda", "/evil.img") == ["gate-format-mismatch"]
    assert refused("-S", "/evil.img") == ["gate-format-mismatch"]
    assert refused("--S", "-drive", "file=/e,format=raw,backing.file.filename=/x") == [
        "gate-refused-option"
    ]


def test_bypass_unknown_option_stops_reading() -> None:
    codes = refused("-frobnicate", "-drive", "file=/evil,format=raw")
    assert codes == ["gate-unknown-option"]


def test_bypass_set_and_global_and_readconfig() -> None:
    assert refused("-set", "drive.d0.file=/evil.img") == ["gate-refused-option"]
    assert refused("-global", "ide-hd.drive=x") == ["gate-refused-option"]
    assert refused("-readconfig", "/tmp/q.cfg") == ["gate-refused-option"]


@pytest.mark.parametrize(
    "drive",
    [
        "file.filename=/evil.img,format=raw",
        "driver=raw,file=/s/good.raw",
        "file=/s/good.qcow2,format=qcow2,backing.file.filename=/evil.img",
        "file=/s/good.qcow2,format=qcow2,backing.driver=raw",
        "file=/s/good.raw",  # no format: qemu probes
        "file=json:{},format=raw",
        "file=nbd:host:1,format=raw",
        "file=/s/good.raw,,backing.file.filename=/evil,format=raw",  # ',,' is not a separator
        "file=/s/good.raw,format=raw,if=pflash",
        "file=/s/good.raw,format=raw,if=mtd",
        "file=/s/good.raw,format=raw,readonly",  # a bare key reads differently in keyval
        "file=/s/good.raw,format=raw,format=qcow2",
    ],
)
def test_bypass_drive_keys(drive: str) -> None:
    command = parse_qemu([QEMU, "-drive", drive])
    if not command.refusals:
        # Only the ',,' case parses: its file is a path with a comma, never a backing key.
        assert command.drives[0].options.keys() == {"file", "format"}
        assert command.drives[0].path == "/s/good.raw,backing.file.filename=/evil"
    else:
        assert [r.code for r in command.refusals] == ["gate-refused-option"]


@pytest.mark.parametrize(
    "args",
    [
        ("-blockdev", "driver=file,filename=/evil.img,node-name=f"),
        ("-blockdev", '{"driver":"qcow2","file":"f","backing":{"driver":"file"}}'),
        ("-hda", "/evil.img"),
        ("-cdrom", "/evil.iso"),
        ("-sd", "/evil.img"),
    ],
)
def test_bypass_other_disk_options(args: tuple[str, ...]) -> None:
    assert refused(*args)


@pytest.mark.parametrize(
    "args",
    [
        ("-kernel", "/boot/vmlinuz"),
        ("-initrd", "/boot/initrd"),
        ("-machine", "pc,kernel=/boot/vmlinuz"),
        ("-machine", "type=pc,initrd=/x"),
        ("-machine", "pc,firmware=/x.bin"),
        ("-machine", "pc,pflash0=node"),
        ("-M", "pc,dtb=/x"),
        ("-bios", "/tmp/evil.bin"),
        ("-pflash", "/tmp/evil.fd"),
        ("-option-rom", "/tmp/evil.rom"),
        ("-L", "/tmp/roms"),
        ("-device", "loader,file=/tmp/evil.bin,addr=0x1000"),
        ("-device", "virtio-net-pci,netdev=n0,romfile=/tmp/evil.rom"),
        ("-device", "vfio-pci,host=01:00.0"),
        ("-device", '{"driver":"loader","file":"/x"}'),
        ("-boot", "order=nc"),
        ("-boot", "n"),
        ("-boot", "once=n"),
        ("-boot", "menu=on,splash=/tmp/x.bmp"),
        ("-netdev", "user,id=n0,tftp=/srv,bootfile=pxelinux.0"),
        ("-netdev", "user,id=n0,guestfwd=tcp:10.0.2.100:1-cmd:/bin/sh"),
        ("-netdev", "user,id=n0,smb=/"),
        ("-netdev", "tap,id=n0,script=/tmp/evil.sh"),
        ("-incoming", "exec:touch /tmp/pwned"),
        ("-fw_cfg", "name=opt/x,file=/etc/shadow"),
        ("-object", "memory-backend-file,id=m,mem-path=/etc/shadow,size=1M"),
        ("-chardev", "file,id=c,path=/etc/passwd"),
        ("-serial", "file:/etc/passwd"),
        ("-serial", "mon:stdio"),
        ("-monitor", "stdio"),
        ("-qmp", "unix:/tmp/q,server=on"),
        ("-add-fd", "fd=3,set=1"),
        ("-display", "vnc=:0"),
        ("-plugin", "/tmp/evil.so"),
        ("-cpu", "help"),
    ],
)
def test_bypass_boot_code_and_host_access(args: tuple[str, ...]) -> None:
    assert refused(*args)


def test_nics_get_no_network_boot_rom() -> None:
    command = parse_qemu([QEMU, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"])
    assert command.refusals == []
    assert command.args[-1] == "virtio-net-pci,netdev=n0,romfile="


def test_store_image_through_a_descriptor(images: Store) -> None:
    args = ["-drive", f"file={images.good},format=raw,if=virtio,readonly=on"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed, bound.result.render("t")
        assert bound.argv[1:3] == ["-nodefaults", "-no-user-config"]
        assert bound.argv[3:5] == ["-add-fd", f"fd={bound.fds[0]},set=1,opaque=rdonly"]
        assert bound.argv[5:] == ["-drive", "file=/dev/fdset/1,format=raw,if=virtio,readonly=on"]
        assert os.path.samestat(os.fstat(bound.fds[0]), os.stat(images.good))
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(bound.fds[0])  # closed when no exec happened


def test_unsigned_store_image_is_refused(images: Store) -> None:
    result = gate(images, "-drive", f"file={images.bad},format=raw,readonly=on")
    assert [c for v in result.verdicts.values() for c in v.codes] == ["unsigned"]


def test_writable_store_image_is_refused(images: Store) -> None:
    result = gate(images, "-drive", f"file={images.good},format=raw")
    assert [r.code for r in result.refusals] == ["gate-refused-option"]


def test_world_writable_store_is_refused_by_name(images: Store) -> None:
    images.root.chmod(0o777)
    result = gate(images, "-drive", f"file={images.good},format=raw,readonly=on")
    assert [r.code for r in result.refusals] == ["gate-untrusted-dir"]
    assert str(images.root) in result.refusals[0].message


def test_store_owned_by_another_user_is_refused(images: Store) -> None:
    os.chown(images.root / "good", 1000, 1000)
    result = gate(images, "-drive", f"file={images.good},format=raw,readonly=on")
    assert [r.code for r in result.refusals] == ["gate-untrusted-dir"]


def _overlay(path: Path, backing: str, fmt: str = "raw") -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, "-u"]
    subprocess.run([*argv, str(path), "64K"], check=True)
    return path


def test_overlay_gets_its_base_as_a_descriptor(images: Store) -> None:
    overlay = make_overlay(images.good.parent, images.config.run_dir or Path(), "vm")
    with bind_qemu(
        parse_qemu([QEMU, "-drive", f"file={overlay},format=qcow2"]), images.config
    ) as bound:
        assert bound.result.allowed, bound.result.render("t")
        assert bound.argv[-1] == (
            "file=/dev/fdset/1,format=qcow2,backing.driver=raw,backing.file.driver=file,"
            "backing.file.filename=/dev/fdset/2"
        )
        assert bound.argv[4].endswith(",set=1,opaque=rdwr")
        assert bound.argv[6].endswith(",set=1,opaque=rdonly")  # the same file, read-only
        assert bound.argv[8].endswith(",set=2,opaque=rdonly")
        assert os.path.samestat(os.fstat(bound.fds[0]), os.fstat(bound.fds[1]))
        assert os.path.samestat(os.fstat(bound.fds[2]), os.stat(images.good))


def test_bypass_overlay_with_relative_backing_path(images: Store) -> None:
    """qemu resolves a relative base against the overlay's directory; refused, not guessed."""
    link_dir = images.root / "vms"
    link_dir.mkdir(mode=0o755)
    overlay = _overlay(link_dir / "vm.qcow2", "../good/atlas-wn-debian12-1.0.raw")
    result = gate(images, "-drive", f"file={overlay},format=qcow2")
    assert [r.code for r in result.refusals] == ["gate-overlay"]


def test_bypass_overlay_over_a_file_outside_the_store(images: Store, tmp_path: Path) -> None:
    evil = tmp_path / "evil.raw"
    evil.write_bytes(b"\0" * 65536)
    overlay = _overlay(tmp_path / "vm.qcow2", str(evil))
    result = gate(images, "-drive", f"file={overlay},format=qcow2")
    assert [r.code for r in result.refusals] == ["gate-outside-store"]


def test_bypass_overlay_whose_header_is_hostile(images: Store, tmp_path: Path) -> None:
    overlay = fx.write(tmp_path / "evil.qcow2", fx.qcow2(size=1 << 20, backing=b"/etc/shadow"))
    result = gate(images, "-drive", f"file={overlay},format=qcow2")
    assert [r.code for r in result.refusals] == ["gate-outside-store"]


def test_bypass_swap_after_check_changes_nothing_qemu_gets(images: Store, tmp_path: Path) -> None:
    """The path is replaced by a hostile file after the gate opened it: the fd is the old file."""
    args = ["-drive", f"file={images.good},format=raw,readonly=on"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed
        original = os.fstat(bound.fds[0])
        images.good.rename(tmp_path / "moved")
        images.good.write_bytes(fx.qcow2(size=1 << 20, backing=b"/etc/shadow"))
        assert os.path.samestat(os.fstat(bound.fds[0]), original)
        assert os.pread(bound.fds[0], 4, 0) != b"QFI\xfb"


def test_symlinked_disk_is_opened_by_what_it_names(images: Store, tmp_path: Path) -> None:
    link = tmp_path / "link.raw"
    link.symlink_to(images.good)
    result = gate(images, "-drive", f"file={link},format=raw,readonly=on")
    assert result.allowed, result.render("t")


def test_terminal_escapes_in_names_are_shown_escaped() -> None:
    command = parse_qemu([QEMU, "/evil\x1b]0;owned\x07.img"])
    message = command.refusals[0].message
    assert "\x1b" not in message
    assert "\x07" not in message
    assert "\\x1b" in message
    assert shown("a\u202eb") == "'a\\x202eb'"


def test_bypass_overlay_not_made_by_imagefactory(images: Store, tmp_path: Path) -> None:
    """A valid qcow2 over the verified base, made by someone else: refused."""
    overlay = _overlay(tmp_path / "vm.qcow2", str(images.good))
    result = gate(images, "-drive", f"file={overlay},format=qcow2")
    assert [r.code for r in result.refusals] == ["gate-overlay"]
    assert "run directory" in result.refusals[0].message


def test_bypass_prefilled_overlay_at_first_start(images: Store) -> None:
    """imagefactory made it, someone wrote guest data into it before its first start."""
    overlay = make_overlay(images.good.parent, images.config.run_dir or Path(), "vm")
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 4k", str(overlay)],
        check=True,
        capture_output=True,
    )
    result = gate(images, "-drive", f"file={overlay},format=qcow2")
    assert [r.code for r in result.refusals] == ["gate-overlay"]
    assert "pre-filled" in result.refusals[0].message


def test_overlay_in_use_after_its_first_start_is_accepted(images: Store) -> None:
    overlay = make_overlay(images.good.parent, images.config.run_dir or Path(), "vm")
    assert gate(images, "-drive", f"file={overlay},format=qcow2").allowed
    with overlay.open("ab") as stream:  # the guest wrote to it while it ran
        stream.write(b"\0" * 65536)
    assert gate(images, "-drive", f"file={overlay},format=qcow2").allowed
