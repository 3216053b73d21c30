from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.builder import assemble
from imagefactory.errors import BuildError

UUID = "0f0e0d0c-0b0a-0908-0706-050403020100"


def test_grub_cfg_names_root_by_uuid_with_serial_console() -> None:
    cfg = assemble.grub_cfg(UUID, "6.1.0-9-cloud-amd64", "wn 1.0")
    assert f"search --no-floppy --fs-uuid --set=root {UUID}\n" in cfg
    assert (
        f"  linux /boot/vmlinuz-6.1.0-9-cloud-amd64 root=UUID={UUID}"
        " ro console=tty0 console=ttyS0,115200n8 net.ifnames=0\n"
    ) in cfg
    assert "  initrd /boot/initrd.img-6.1.0-9-cloud-amd64\n" in cfg
    assert "set timeout=0\n" in cfg


def test_fstab_mounts_root_by_uuid() -> None:
    assert assemble.fstab(UUID).splitlines()[-1] == f"UUID={UUID} / ext4 errors=remount-ro 0 1"


def _fake_tree(root: Path, kernels: list[str], with_grub: bool = True) -> Path:
    for sub in ("boot/grub/i386-pc", "etc", "lost+found"):
        (root / sub).mkdir(parents=True)
    for version in kernels:
        (root / f"boot/vmlinuz-{version}").write_bytes(b"k")
        (root / f"boot/initrd.img-{version}").write_bytes(b"i")
    if with_grub:
        (root / "boot/grub/i386-pc/core.img").write_bytes(b"c" * 1000)
        (root / "boot/grub/i386-pc/boot.img").write_bytes(b"b" * 512)
    return root


def test_newest_kernel_compares_versions_not_strings(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path, ["6.1.0-9-amd64", "6.1.0-10-amd64"])
    (tree / "boot/vmlinuz-6.1.0-11-amd64").write_bytes(b"no initrd")
    assert assemble.newest_kernel(tree) == "6.1.0-10-amd64"


def test_finish_tree_adds_proc_sys_and_boot_config(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path, ["6.1.0-10-amd64"])
    kernel = assemble.finish_tree(tree, UUID, "wn")
    assert kernel == "6.1.0-10-amd64"
    assert (tree / "proc").stat().st_mode & 0o777 == 0o555
    assert (tree / "sys").stat().st_mode & 0o777 == 0o555
    assert (tree / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert not (tree / "lost+found").exists()
    assert UUID in (tree / "etc/fstab").read_text()
    assert "vmlinuz-6.1.0-10-amd64" in (tree / "boot/grub/grub.cfg").read_text()


def test_finish_tree_without_kernel_is_a_clear_error(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path, [])
    with pytest.raises(BuildError, match="no kernel with an initrd"):
        assemble.finish_tree(tree, UUID, "wn")


def test_finish_tree_without_grub_images_names_the_element_hook(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path, ["6.1"], with_grub=False)
    with pytest.raises(BuildError, match=r"lacks /boot/grub/i386-pc/core\.img") as info:
        assemble.finish_tree(tree, UUID, "wn")
    assert "90-imagefactory-bootloader" in (info.value.hint or "")


def test_size_check_names_the_size_to_set() -> None:
    assemble.check_size(500 << 20, 2 << 30)
    with pytest.raises(BuildError, match="does not fit") as info:
        assemble.check_size(1900 << 20, 2 << 30)
    assert info.value.hint == "set disk.size in the recipe to at least 3G"


def test_boot_code_keeps_partition_table(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t", ["6.1"])
    raw = tmp_path / "disk.raw"
    mbr = bytearray(512)
    mbr[446:462] = b"P" * 16  # a partition entry
    mbr[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(mbr) + bytes(2048 * 512))
    assemble.write_boot_code(raw, tree)
    data = raw.read_bytes()
    assert data[:440] == b"b" * 440
    assert data[446:462] == b"P" * 16
    assert data[510:512] == b"\x55\xaa"
    assert data[512 : 512 + 1000] == b"c" * 1000


def test_boot_code_refuses_disk_without_partition_table(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t", ["6.1"])
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(4096))
    with pytest.raises(BuildError, match="no partition table"):
        assemble.write_boot_code(raw, tree)


def test_oversized_core_img_is_refused(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "t", ["6.1"])
    (tree / "boot/grub/i386-pc/core.img").write_bytes(b"c" * (2048 * 512))
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(510) + b"\x55\xaa")
    with pytest.raises(BuildError, match="exceeds"):
        assemble.write_boot_code(raw, tree)
