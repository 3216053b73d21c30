"""A small finished OS tree for the disk assembly's tests: GRUB's two BIOS images
and one data file, as :func:`imagefactory.builder.assemble.prepare` leaves it."""

from __future__ import annotations

from pathlib import Path

from imagefactory.builder import assemble
from imagefactory.vocab import BootMode

UUID = "0f0e0d0c-0b0a-0908-0706-050403020100"


def bios_tree(root: Path, data: bytes, disk_bytes: int = 1 << 30) -> assemble.PreparedTree:
    """``root/tree`` with ``/etc/data`` holding ``data``, prepared for a BIOS disk."""
    tree = root / "tree"
    (tree / "boot/grub/i386-pc").mkdir(parents=True)
    (tree / "boot/grub/i386-pc/core.img").write_bytes(b"c" * 1000)
    (tree / "boot/grub/i386-pc/boot.img").write_bytes(b"b" * 512)
    (tree / "etc").mkdir()
    (tree / "etc/data").write_bytes(data)
    layout = assemble.Layout(BootMode.BIOS, disk_bytes)
    return assemble.PreparedTree(tree, layout, UUID, "6.1", 5 << 20)
