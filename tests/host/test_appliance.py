"""The audit's libguestfs appliance: supermin's, its kernel unpacked for a PVH boot."""

from __future__ import annotations

import gzip
import logging
import lzma
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from imagefactory.host import appliance
from imagefactory.host.appliance import KernelError, fast_appliance, unpack_kernel
from imagefactory.run import Completed


def elf(*, pvh: bool = True, machine: int = 62) -> bytes:
    """A minimal x86_64 ELF file whose one PT_NOTE holds a Xen note (type 18 = PVH entry)."""
    note_type = 18 if pvh else 5
    notes = struct.pack("<III", 4, 8, note_type) + b"Xen\0" + struct.pack("<Q", 0x1000000)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 64 + 56, 0, 0, len(notes), len(notes), 4)
    return header + phdr + notes + b"\0" * 64


def bzimage(payload: bytes, *, magic: bytes = b"HdrS", version: int = 0x020F) -> bytes:
    """A bzImage-shaped file: one setup sector, then the compressed kernel."""
    setup = bytearray(1024)
    setup[0x1F1] = 1
    setup[0x202:0x206] = magic
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<II", setup, 0x248, 16, len(payload))
    return bytes(setup) + b"\0" * 16 + payload + b"tail"


def test_an_xz_kernel_is_unpacked_to_its_elf() -> None:
    kernel = elf()
    assert unpack_kernel(bzimage(lzma.compress(kernel, format=lzma.FORMAT_XZ))) == kernel


def test_a_gzip_kernel_is_unpacked_to_its_elf() -> None:
    kernel = elf()
    assert unpack_kernel(bzimage(gzip.compress(kernel))) == kernel


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (bzimage(gzip.compress(elf()), magic=b"NoPe"), "not a bzImage"),
        (bzimage(gzip.compress(elf()), version=0x0206), "has no payload fields"),
        (bzimage(b"\x28\xb5\x2f\xfd" + b"\0" * 32), "format not read here"),
        (bzimage(b"\xfd7zXZ\x00garbage"), "does not unpack"),
        (bzimage(gzip.compress(b"not an elf at all" * 8)), "not an ELF file"),
        (bzimage(gzip.compress(elf(machine=183))), "not x86_64"),
        (bzimage(gzip.compress(elf(pvh=False))), "no PVH entry note"),
        (b"short", "not a bzImage"),
    ],
)
def test_a_kernel_that_cannot_boot_unpacked_is_refused_with_the_reason(
    image: bytes, reason: str
) -> None:
    with pytest.raises(KernelError, match=reason):
        unpack_kernel(image)


def test_a_payload_outside_the_file_is_refused() -> None:
    image = bytearray(bzimage(gzip.compress(elf())))
    struct.pack_into("<II", image, 0x248, 16, len(image))
    with pytest.raises(KernelError, match="outside the file"):
        unpack_kernel(bytes(image))


class FakeSupermin:
    """Stands in for ``supermin --build``: writes kernel, initrd and root into ``-o``."""

    def __init__(self, kernel: bytes) -> None:
        self.kernel = kernel
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **_: Any) -> Completed:
        self.calls.append(list(argv))
        out = Path(argv[argv.index("-o") + 1])
        out.mkdir(exist_ok=True)
        (out / "kernel").write_bytes(self.kernel)
        (out / "initrd").write_bytes(b"initrd")
        (out / "root").write_bytes(b"root")
        return Completed(list(argv), 0, "")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSupermin:
    """A fake host: its own dpkg status, /boot and supermin.d; supermin faked."""
    status = tmp_path / "dpkg-status"
    status.write_text("Package: a\n")
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0-1-amd64").write_bytes(b"k")
    inputs = tmp_path / "supermin.d"
    inputs.mkdir()
    (inputs / "packages").write_text("a\n")
    fake = FakeSupermin(bzimage(lzma.compress(elf(), format=lzma.FORMAT_XZ)))
    monkeypatch.setattr(appliance, "DPKG_STATUS", status)
    monkeypatch.setattr(appliance, "BOOT", boot)
    monkeypatch.setattr(appliance, "supermin_inputs", lambda: inputs)
    monkeypatch.setattr("imagefactory.host.appliance.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(appliance, "run", fake)
    monkeypatch.setattr(appliance, "host_machine", lambda: "x86_64")
    return fake


def test_the_fixed_appliance_is_made_once_and_reused(tmp_path: Path, host: FakeSupermin) -> None:
    statuses: list[str] = []
    fixed = fast_appliance(tmp_path / "appliance", statuses.append)
    assert fixed == tmp_path / "appliance" / "fixed"
    assert (fixed / "kernel").read_bytes() == elf()
    assert (fixed / "initrd").read_bytes() == b"initrd"
    assert (fixed / "root").is_symlink()
    assert (fixed / "root").read_bytes() == b"root"
    assert (fixed / "README.fixed").is_file()
    assert len(host.calls) == 1
    assert host.calls[0][1:3] == ["--build", "--if-newer"]
    assert statuses
    assert "making the libguestfs appliance" in statuses[0]
    assert (tmp_path / "appliance").stat().st_mode & 0o777 == 0o700
    assert fast_appliance(tmp_path / "appliance") == fixed
    assert len(host.calls) == 1  # nothing changed: no supermin run at all


@pytest.mark.parametrize(
    "change", ["dpkg-status", "boot/vmlinuz-6.1.0-2-amd64", "supermin.d/packages"]
)
def test_a_package_or_kernel_change_rebuilds_it(
    tmp_path: Path, host: FakeSupermin, change: str
) -> None:
    fast_appliance(tmp_path / "appliance")
    time.sleep(0.01)  # a new mtime_ns even on a coarse clock
    (tmp_path / change).write_text("changed\n")
    assert fast_appliance(tmp_path / "appliance") is not None
    assert len(host.calls) == 2


def test_a_kernel_changed_in_the_cache_is_made_again(tmp_path: Path, host: FakeSupermin) -> None:
    fixed = fast_appliance(tmp_path / "appliance")
    assert fixed is not None
    (fixed / "kernel").write_bytes(b"something else")
    assert fast_appliance(tmp_path / "appliance") == fixed
    assert len(host.calls) == 2
    assert (fixed / "kernel").read_bytes() == elf()


def test_a_kernel_that_cannot_be_unpacked_falls_back_to_libguestfs_own(
    tmp_path: Path, host: FakeSupermin, caplog: pytest.LogCaptureFixture
) -> None:
    host.kernel = bzimage(gzip.compress(elf(pvh=False)))
    with caplog.at_level(logging.WARNING):
        assert fast_appliance(tmp_path / "appliance") is None
    assert "no PVH entry note" in caplog.text
    assert "using libguestfs's own" in caplog.text


def test_a_directory_others_can_write_is_not_used(
    tmp_path: Path, host: FakeSupermin, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "appliance"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        assert fast_appliance(root) is None
    assert "writable by others" in caplog.text
    assert host.calls == []


def test_no_supermin_means_libguestfs_own(
    tmp_path: Path, host: FakeSupermin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imagefactory.host.appliance.shutil.which", lambda name: None)
    assert fast_appliance(tmp_path / "appliance") is None
    assert host.calls == []


@pytest.mark.integration
def test_the_host_kernel_unpacks_and_its_appliance_boots(tmp_path: Path) -> None:
    """The real thing: supermin builds the appliance, libguestfs boots the unpacked kernel."""
    from tests.conftest import require_integration_host

    require_integration_host()
    import guestfs

    fixed = fast_appliance(tmp_path / "appliance")
    assert fixed is not None, "the fast appliance could not be made on this host"
    assert (fixed / "kernel").read_bytes()[:4] == b"\x7fELF"
    disk = tmp_path / "blank.raw"
    with disk.open("wb") as stream:
        stream.truncate(16 << 20)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
        g.set_path(str(fixed))
        g.add_drive_opts(str(disk), format="raw", readonly=1)
        g.launch()
        assert g.get_path() == str(fixed)
        assert g.blockdev_getsize64("/dev/sda") == 16 << 20
    finally:
        g.close()
