"""The UEFI disk layout: GPT, an EFI system partition made without a mount."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagefactory.builder import assemble
from imagefactory.errors import BuildError
from imagefactory.vocab import Arch, BootMode

UUID = "0f0e0d0c-0b0a-0908-0706-050403020100"
GIB = 1 << 30


def test_uefi_layout_puts_the_esp_first_and_keeps_the_backup_gpt_free() -> None:
    layout = assemble.Layout(BootMode.UEFI, 2 * GIB)
    assert layout.esp_start == 2048
    assert layout.root_start == 2048 + 64 * 2048
    end = layout.root_start + layout.root_sectors
    assert end <= 2 * GIB // 512 - 34  # the backup GPT's 33 sectors and more stay free
    assert layout.root_sectors % 2048 == 0
    assert layout.partition_table == "gpt"
    assert layout.sfdisk_script() == (
        "label: gpt\n"
        'start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"\n'
        f"start=133120, size={layout.root_sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4,"
        ' name="root"\n'
    )


def test_bios_layout_is_unchanged() -> None:
    layout = assemble.Layout(BootMode.BIOS, 2 * GIB)
    assert layout.root_start == 2048
    assert layout.root_bytes == 2 * GIB - 2048 * 512
    assert layout.partition_table == "mbr"
    assert layout.sfdisk_script() == "label: dos\nstart=2048, type=83, bootable\n"


def test_uefi_grub_cfg_reads_gpt_and_the_esp_stub_finds_the_root() -> None:
    cfg = assemble.grub_cfg(UUID, "6.1.0-1-amd64", "t 1", BootMode.UEFI)
    assert "insmod part_gpt\n" in cfg
    assert "part_msdos" not in cfg
    stub = assemble.esp_grub_cfg(UUID)
    assert f"search --no-floppy --fs-uuid --set=root {UUID}\n" in stub
    assert "configfile $prefix/grub.cfg\n" in stub


def test_fstab_mounts_the_esp_by_volume_id() -> None:
    assert assemble.fstab(UUID, "ABCD-1234").splitlines()[-1] == (
        "UUID=ABCD-1234 /boot/efi vfat umask=0077,nofail 0 2"
    )
    assert "/boot/efi" not in assemble.fstab(UUID)


def test_esp_volume_ids_are_fat_shaped() -> None:
    value = assemble.new_esp_uuid()
    assert len(value) == 9
    assert value[4] == "-"
    int(value.replace("-", ""), 16)


def test_uefi_tree_without_a_staged_loader_names_the_element_hook(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1").write_text("k")
    (boot / "initrd.img-6.1").write_text("i")
    (tmp_path / "etc").mkdir()
    with pytest.raises(BuildError) as err:
        assemble.finish_tree(tmp_path, UUID, "t", boot=BootMode.UEFI, esp_uuid="ABCD-1234")
    assert "boot/efi/EFI/BOOT/BOOT<arch>.EFI" in str(err.value)
    assert "90-imagefactory-bootloader" in (err.value.hint or "")


def test_uefi_size_check_counts_the_esp() -> None:
    content = 1640 * (1 << 20)  # fits 2 GiB with BIOS, not with a 64 MiB ESP as well
    assemble.check_size(content, 2 * GIB, BootMode.BIOS)
    with pytest.raises(BuildError, match="does not fit"):
        assemble.check_size(content, 2 * GIB, BootMode.UEFI)


@pytest.mark.skipif(
    shutil.which("mkfs.vfat", path="/usr/sbin:/sbin:/usr/bin") is None
    or shutil.which("mdir") is None,
    reason="dosfstools and mtools are not installed (scripts/setup installs them)",
)
def test_make_esp_fills_a_fat_file_system_and_leaves_an_empty_mount_point(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    loader_dir = tree / "boot/efi/EFI/BOOT"
    loader_dir.mkdir(parents=True)
    (loader_dir / "BOOTX64.EFI").write_bytes(b"MZ shim")
    (tree / "boot/efi/EFI/debian").mkdir()
    image = tmp_path / "esp.img"
    assemble.make_esp(tree, image, "ABCD-1234", UUID, None)
    assert list((tree / "boot/efi").iterdir()) == []
    listing = subprocess.run(
        ["mdir", "-/", "-b", "-i", str(image), "::/"], capture_output=True, text=True, check=True
    ).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing
    assert "::/EFI/debian/grub.cfg" in listing
    assert "::/EFI/BOOT/grub.cfg" in listing
    stub = subprocess.run(
        ["mtype", "-i", str(image), "::/EFI/BOOT/grub.cfg"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert UUID in stub
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(assemble.ESP_SECTORS * 512 + 4096))
    assemble.copy_into(raw, image, 4096)
    assert raw.read_bytes()[4096 : 4096 + 16] == image.read_bytes()[:16]


@pytest.mark.skipif(
    shutil.which("mkfs.vfat", path="/usr/sbin:/sbin:/usr/bin") is None
    or shutil.which("mdir") is None,
    reason="dosfstools and mtools are not installed (scripts/setup installs them)",
)
@pytest.mark.parametrize("kind", ["file symlink", "directory symlink", "fifo"])
def test_make_esp_refuses_what_is_not_a_file_or_directory_and_never_follows_it(
    tmp_path: Path, kind: str
) -> None:
    """A guest symlink under /boot/efi must not pull a host file onto the ESP (mcopy
    follows symlinks): the staged files reach mcopy only as a private copy made
    through the tree, and a symlink, fifo or device there is refused by name."""
    host = tmp_path / "host"
    (host / "secrets").mkdir(parents=True)
    (host / "secrets" / "key").write_text("HOST SECRET")
    tree = tmp_path / "tree"
    loader_dir = tree / "boot/efi/EFI/BOOT"
    loader_dir.mkdir(parents=True)
    (loader_dir / "BOOTX64.EFI").write_bytes(b"MZ shim")
    bad = tree / "boot/efi/EFI/BOOT/extra"
    if kind == "file symlink":
        bad.symlink_to(host / "secrets" / "key")
    elif kind == "directory symlink":
        bad.symlink_to(host / "secrets")
    else:
        os.mkfifo(bad)
    image = tmp_path / "esp.img"
    with pytest.raises(BuildError, match=r"/boot/efi/EFI/BOOT/extra is not a regular file") as info:
        assemble.make_esp(tree, image, "ABCD-1234", UUID, None)
    assert ("a fifo" if kind == "fifo" else "a symlink") in info.value.message
    assert b"HOST SECRET" not in image.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".esp-files-")] == []


def test_aarch64_kernel_line_names_the_pl011_serial_console() -> None:
    cfg = assemble.grub_cfg(UUID, "6.1.0-1-arm64", "t", BootMode.UEFI, Arch.AARCH64)
    assert " console=ttyAMA0,115200n8 " in cfg
    assert "ttyS0" not in cfg
    assert " console=ttyS0,115200n8 " in assemble.grub_cfg(UUID, "6.1", "t")


def test_finish_tree_empties_dev_of_what_the_build_host_left(tmp_path: Path) -> None:
    boot = tmp_path / "boot/grub/i386-pc"
    boot.mkdir(parents=True)
    for name in ("core.img", "boot.img"):
        (boot / name).write_bytes(b"x")
    (tmp_path / "boot/vmlinuz-6.1").write_text("k")
    (tmp_path / "boot/initrd.img-6.1").write_text("i")
    (tmp_path / "etc").mkdir()
    (tmp_path / "dev/pts").mkdir(parents=True)
    (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "dev/fd").symlink_to("/proc/self/fd")
    assemble.finish_tree(tmp_path, UUID, "t")
    assert (tmp_path / "dev").is_dir()
    assert list((tmp_path / "dev").iterdir()) == []
