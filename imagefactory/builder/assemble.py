"""OS tree -> partitioned, bootable disk image, without device-mapper.

diskimage-builder's ``vm`` element partitions through kpartx/device-mapper,
which many build hosts (containers, CI runners) do not have. The assembly here
needs neither, nor a loop device of its own:

1. the tree is DIB's root file system image, mounted data-only by
   :mod:`imagefactory.builder.rootfs`;
2. finish the tree: ``/proc`` and ``/sys`` (systemd hangs without them),
   ``/dev`` emptied, ``/etc/fstab`` and ``/boot/grub/grub.cfg``
   naming the root file system by a UUID chosen here; every path resolved
   inside the tree (:class:`~imagefactory.guest.tree.HostTree`), so a guest
   symlink never makes the build write on the host. :func:`prepare` stops
   here: the build hardens this tree before it becomes a disk
   (:func:`make_disk` does the rest);
3. a raw disk (in memory when it fits, :mod:`imagefactory.builder.scratch`)
   with an MBR partition table (``sfdisk`` works on plain files);
4. ``mkfs.ext4 -E offset=... -d TREE`` creates and fills the partition in place;
5. GRUB for BIOS boot: the image's own ``boot.img`` goes into the MBR's code
   area and its ``core.img`` (built in the chroot by the generated element) into
   the gap before the partition -- what ``grub-install`` does, minus the block
   device it insists on;
6. ``qemu-img convert`` to each requested format (with ``disk.compress``, the
   qcow2 with compressed clusters, zlib: see :data:`COMPRESSION_TYPE`).

For ``boot: uefi`` steps 3-5 differ: a GPT (``sfdisk`` again) with an EFI
system partition first and the root file system second; the ESP is a FAT file
system made in a separate file (``mkfs.vfat -C``), filled with ``mcopy`` from
the files the element staged under ``/boot/efi`` plus a small ``grub.cfg``
that finds the root file system by UUID, and copied into its partition's
byte range; ``/boot/efi`` stays as its mount point, named in ``/etc/fstab``.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imagefactory.builder.rootfs import content_bytes, release_tree
from imagefactory.builder.scratch import RawDisk, fits_in_memory, raw_disk
from imagefactory.errors import BuildError
from imagefactory.guest.tree import HostTree
from imagefactory.run import run
from imagefactory.vocab import Arch, BootMode, DiskFormat

SECTOR = 512
#: First partition starts at 1 MiB: room for GRUB's core.img and alignment.
PARTITION_START_SECTOR = 2048
MBR_CODE_BYTES = 440  # boot code area; the partition table follows
#: Space kept free on the root file system beyond the content (journal,
#: metadata, first boot writes).
FS_OVERHEAD = 1.15
FS_SLACK_BYTES = 128 * 1024 * 1024

KERNEL_CMDLINE = "ro console=tty0 console={serial},115200n8 net.ifnames=0"

#: The EFI system partition: 64 MiB of FAT holds shim, GRUB and room to update them.
ESP_SECTORS = 64 * 1024 * 1024 // SECTOR
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
#: The primary GPT needs sectors 0-33, the backup the last 33.
GPT_BACKUP_SECTORS = 33
ALIGN_SECTORS = 2048
ESP_STAGING = "boot/efi"


@dataclass(frozen=True)
class Layout:
    """Where the partitions lie, in sectors, for one boot mode and disk size."""

    boot: BootMode
    disk_bytes: int

    @property
    def esp_start(self) -> int:
        return PARTITION_START_SECTOR

    @property
    def root_start(self) -> int:
        if self.boot is BootMode.UEFI:
            return PARTITION_START_SECTOR + ESP_SECTORS
        return PARTITION_START_SECTOR

    @property
    def root_sectors(self) -> int:
        end = self.disk_bytes // SECTOR
        if self.boot is BootMode.UEFI:
            end -= GPT_BACKUP_SECTORS + 1
        sectors = end - self.root_start
        return sectors - sectors % ALIGN_SECTORS

    @property
    def root_bytes(self) -> int:
        return self.root_sectors * SECTOR

    @property
    def partition_table(self) -> str:
        return "gpt" if self.boot is BootMode.UEFI else "mbr"

    def sfdisk_script(self) -> str:
        if self.boot is BootMode.BIOS:
            return _partition_script()
        return (
            "label: gpt\n"
            f'start={self.esp_start}, size={ESP_SECTORS}, type={ESP_TYPE}, name="EFI System"\n'
            f"start={self.root_start}, size={self.root_sectors}, type={LINUX_FS_TYPE},"
            ' name="root"\n'
        )


@dataclass(frozen=True)
class AssembledDisk:
    """What the assembler produced."""

    images: dict[DiskFormat, Path]
    root_uuid: str
    kernel: str
    content_bytes: int
    partition_table: str
    #: The ESP's FAT volume id as fstab names it (``ABCD-1234``); UEFI only.
    esp_uuid: str | None = None


def _partition_script() -> str:
    return f"label: dos\nstart={PARTITION_START_SECTOR}, type=83, bootable\n"


def _is_file(tree: HostTree, path: str) -> bool:
    """A regular file at ``path`` (symlinks followed inside the tree)."""
    return tree.read(path, 0) is not None


def newest_kernel(tree: Path) -> str:
    """The newest kernel version in ``/boot`` that has an initrd next to it."""
    with HostTree(tree) as t:
        versions = [
            name.removeprefix("vmlinuz-")
            for name in t.listdir("/boot")
            if name.startswith("vmlinuz-")
            and _is_file(t, f"/boot/initrd.img-{name.removeprefix('vmlinuz-')}")
        ]
    if not versions:
        raise BuildError(
            "the OS tree has no kernel with an initrd in /boot",
            hint="the base must install a kernel package; check the build log",
        )
    return max(versions, key=_version_key)


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", version)]


def grub_cfg(
    root_uuid: str,
    kernel: str,
    title: str,
    boot: BootMode = BootMode.BIOS,
    arch: Arch = Arch.X86_64,
) -> str:
    """A fixed GRUB menu: one entry, no timeout, serial and VGA console."""
    part = "part_gpt" if boot is BootMode.UEFI else "part_msdos"
    cmdline = KERNEL_CMDLINE.format(serial=arch.serial_console)
    return (
        "# Generated by imagefactory.\n"
        "set default=0\nset timeout=0\n"
        "serial --unit=0 --speed=115200\nterminal_input console serial\n"
        "terminal_output console serial\n"
        f"insmod {part}\ninsmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"menuentry '{title}' {{\n"
        f"  linux /boot/vmlinuz-{kernel} root=UUID={root_uuid} {cmdline}\n"
        f"  initrd /boot/initrd.img-{kernel}\n"
        "}\n"
    )


def esp_grub_cfg(root_uuid: str) -> str:
    """The ESP's GRUB stub: find the root file system, read its /boot/grub/grub.cfg."""
    return (
        "# Generated by imagefactory.\n"
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        "set prefix=($root)/boot/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


def fstab(root_uuid: str, esp_uuid: str | None = None) -> str:
    text = f"# Generated by imagefactory.\nUUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
    if esp_uuid is not None:
        text += f"UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 2\n"
    return text


def new_esp_uuid() -> str:
    """A FAT volume id, as mkfs.vfat -i takes it and fstab names it."""
    value = uuid.uuid4().hex[:8].upper()
    return f"{value[:4]}-{value[4:]}"


def finish_tree(
    tree: Path,
    root_uuid: str,
    title: str,
    *,
    boot: BootMode = BootMode.BIOS,
    esp_uuid: str | None = None,
    arch: Arch = Arch.X86_64,
) -> str:
    """Finish the tree for its disk: ``/proc``, ``/sys``, an empty ``/dev``, the boot files.

    Returns the kernel version the boot configuration names.

    Every path is resolved inside the tree: a guest symlink (``/dev -> /dev``,
    ``/etc/fstab -> /etc/passwd``) never makes this touch the build host.
    """
    with HostTree(tree) as t:
        for name in ("/proc", "/sys"):
            t.mkdir(name, 0o555)
        for name in ("/dev", "/run"):
            entry = t.lstat(name)
            if entry is not None and not entry.is_dir:
                t.remove(name)
                entry = None
            if entry is None:
                t.mkdir(name, 0o755)
        # /dev is a devtmpfs at boot; whatever the build left in it is the build
        # host's (an emulated aarch64 build left the host's /dev/kvm, group 992).
        for name in t.listdir("/dev"):
            t.remove(f"/dev/{name}")
        t.mkdir("/tmp", 0o1777)  # noqa: S108 -- the guest's /tmp, inside the tree
        # mke2fs creates its own lost+found.
        lost = t.lstat("/lost+found")
        if lost is not None and lost.is_dir and not t.listdir("/lost+found"):
            t.remove("/lost+found")
        kernel = newest_kernel(tree)
        for required in _required_boot_files(t, boot):
            if not _is_file(t, f"/{required}"):
                raise BuildError(
                    f"the OS tree lacks /{required}",
                    hint="the generated element's finalise.d/90-imagefactory-bootloader "
                    "did not run",
                )
        t.write("/etc/fstab", fstab(root_uuid, esp_uuid).encode(), 0o644)
        cfg = grub_cfg(root_uuid, kernel, title, boot, arch)
        t.write("/boot/grub/grub.cfg", cfg.encode(), 0o644)
    return kernel


def _required_boot_files(tree: HostTree, boot: BootMode) -> list[str]:
    if boot is BootMode.BIOS:
        return ["boot/grub/i386-pc/core.img", "boot/grub/i386-pc/boot.img"]
    where = f"/{ESP_STAGING}/EFI/BOOT"
    loaders = sorted(n for n in tree.listdir(where) if fnmatch.fnmatchcase(n, "BOOT*.EFI"))
    if not loaders:
        return [f"{ESP_STAGING}/EFI/BOOT/BOOT<arch>.EFI"]
    return [f"{ESP_STAGING}/EFI/BOOT/{name}" for name in loaders]


def make_esp(
    tree: Path, image: Path, esp_uuid: str, root_uuid: str, logfile: IO[str] | None
) -> None:
    """A FAT file system in ``image`` holding what the element staged in /boot/efi.

    The staged files move onto the ESP; ``/boot/efi`` stays, empty, as its
    mount point. Every ``EFI/*`` directory gets the GRUB stub configuration.
    """
    staged = tree / ESP_STAGING
    with HostTree(tree) as t:
        efi = f"/{ESP_STAGING}/EFI"
        for name in t.listdir(efi):
            entry = t.lstat(f"{efi}/{name}")
            if entry is not None and entry.is_dir:
                t.write(f"{efi}/{name}/grub.cfg", esp_grub_cfg(root_uuid).encode(), 0o644)
    run(
        [
            "mkfs.vfat",
            "-C",
            "-i",
            esp_uuid.replace("-", ""),
            "-n",
            "EFI",
            str(image),
            str(ESP_SECTORS * SECTOR // 1024),
        ],
        logfile=logfile,
    )
    # mcopy follows symlinks: it is handed a private copy of the staged files,
    # made through the tree (no guest symlink followed), never the tree itself.
    files = Path(tempfile.mkdtemp(prefix=".esp-files-", dir=image.parent))
    try:
        entries = _copy_esp_files(tree, files)
        run(["mcopy", "-s", "-Q", "-m", "-i", str(image), *entries, "::/"], logfile=logfile)
    finally:
        shutil.rmtree(files, ignore_errors=True)
    staged_entries = sorted(str(p) for p in staged.iterdir())
    run(["rm", "-rf", "--one-file-system", *staged_entries], logfile=logfile)
    with HostTree(tree) as t:
        t.chmod(f"/{ESP_STAGING}", 0o700)


def _copy_esp_files(tree: Path, target: Path) -> list[str]:
    """Copy what is staged under /boot/efi into ``target``, through the tree.

    Only directories and regular files go onto a FAT file system: anything else
    (a symlink, fifo, device or socket) is refused by name, not followed or
    skipped. Returns ``target``'s top-level entries, for ``mcopy``.
    """
    top = f"/{ESP_STAGING}"
    with HostTree(tree) as t:
        for entry in t.walk(top):  # sorted: a directory before what it holds
            where = target / entry.path[len(top) + 1 :]
            if entry.is_dir:
                where.mkdir(mode=0o755)
            elif entry.is_file:
                t.copy_out(entry.path, where)
            else:
                raise BuildError(
                    f"{tree}: {entry.path} is not a regular file or directory"
                    f" ({_kind(entry.mode)}); only those go onto the EFI system partition",
                    hint="the image's element staged it under /boot/efi: stage a copy instead",
                )
    return sorted(str(p) for p in target.iterdir())


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return f"mode {mode:o}"


def copy_into(raw: Path, part: Path, offset: int) -> None:
    """Write the bytes of ``part`` into ``raw`` at ``offset`` (no loop device)."""
    with part.open("rb") as src, raw.open("r+b") as dst:
        dst.seek(offset)
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def check_size(content: int, disk_size: int, boot: BootMode = BootMode.BIOS) -> None:
    layout = Layout(boot, disk_size)
    partition = layout.root_bytes
    needed = int(content * FS_OVERHEAD) + FS_SLACK_BYTES
    if needed > partition:
        gib = -(-(needed + disk_size - partition) // (1 << 30))
        raise BuildError(
            f"the image content ({content / (1 << 20):.0f} MiB) does not fit the disk"
            f" ({disk_size / (1 << 20):.0f} MiB)",
            hint=f"set disk.size in the recipe to at least {gib}G",
        )


def write_boot_code(raw: Path, tree: Path) -> None:
    """Write GRUB's boot.img (MBR code area) and core.img (sectors 1..2047)."""
    room = (PARTITION_START_SECTOR - 1) * SECTOR
    with HostTree(tree) as t:
        boot_img = t.read("/boot/grub/i386-pc/boot.img", SECTOR + 1) or b""
        core_img = t.read("/boot/grub/i386-pc/core.img", room + 1) or b""
    if len(boot_img) != SECTOR:
        raise BuildError(f"GRUB boot.img is {len(boot_img)} bytes, expected {SECTOR}")
    if len(core_img) > room:
        raise BuildError(f"GRUB core.img ({len(core_img)} bytes) exceeds the {room}-byte gap")
    with raw.open("r+b") as disk:
        mbr = bytearray(disk.read(SECTOR))
        if mbr[510:512] != b"\x55\xaa":
            raise BuildError(f"{raw}: no partition table written before the boot code")
        # Keep the partition table and signature; replace only the code area.
        mbr[:MBR_CODE_BYTES] = boot_img[:MBR_CODE_BYTES]
        disk.seek(0)
        disk.write(mbr)
        disk.seek(SECTOR)
        disk.write(core_img)


@dataclass(frozen=True)
class PreparedTree:
    """An extracted, finished OS tree waiting to become a disk (see :func:`prepare`)."""

    tree: Path
    layout: Layout
    root_uuid: str
    kernel: str
    content_bytes: int
    esp_uuid: str | None = None
    #: The filled EFI system partition (a FAT file), UEFI only.
    esp_image: Path | None = None


def prepare(
    tree: Path,
    workdir: Path,
    *,
    disk_size: int,
    title: str,
    boot: BootMode = BootMode.BIOS,
    arch: Arch = Arch.X86_64,
    logfile: IO[str] | None = None,
) -> PreparedTree:
    """Step 2 (and the ESP): DIB's tree, mounted at ``tree``, finished for its disk.

    The tree stays until :func:`make_disk` (or the caller, with
    :func:`~imagefactory.builder.rootfs.release_tree`) releases it; the build
    hardens it in between.
    """
    content = content_bytes(tree)
    check_size(content, disk_size, boot)
    layout = Layout(boot, disk_size)
    root_uuid = str(uuid.uuid4())
    esp_uuid = new_esp_uuid() if boot is BootMode.UEFI else None
    kernel = finish_tree(tree, root_uuid, title, boot=boot, esp_uuid=esp_uuid, arch=arch)
    esp: Path | None = None
    if esp_uuid is not None:
        esp = workdir / "esp.img"
        make_esp(tree, esp, esp_uuid, root_uuid, logfile)
    return PreparedTree(tree, layout, root_uuid, kernel, content, esp_uuid, esp)


#: The qcow2 compression this project writes and its readers accept: zlib, the
#: qcow2 default that every qemu, libguestfs and Xen's qemu reads. zstd (qemu 5.1
#: and later) would decompress faster, but an older hypervisor cannot open it and
#: the format check refuses it (imagefactory.diskformat: no zstd decoder is handed
#: guest-supplied data on a hypervisor host).
COMPRESSION_TYPE = "zlib"


def convert_argv(raw: Path, target: Path, fmt: DiskFormat, *, compress: bool) -> list[str]:
    """``qemu-img convert`` of the raw disk to ``fmt``; only a qcow2 is ever compressed.

    The compression type is stated, not left to qemu-img's default.
    """
    argv = ["qemu-img", "convert", "-f", "raw", "-O", str(fmt)]
    if compress and fmt is DiskFormat.QCOW2:
        argv += ["-c", "-o", f"compression_type={COMPRESSION_TYPE}"]
    return [*argv, str(raw), str(target)]


def _fill_raw(prepared: PreparedTree, raw: RawDisk, logfile: IO[str] | None) -> None:
    """Steps 3-5 on the raw disk: the partition table, the file systems, the boot code."""
    layout, tree = prepared.layout, prepared.tree
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw.path)],
        stdin=layout.sfdisk_script(),
        logfile=logfile,
        pass_fds=raw.pass_fds,
    )
    if prepared.esp_image is not None:
        copy_into(raw.path, prepared.esp_image, layout.esp_start * SECTOR)
        prepared.esp_image.unlink()
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-U",
            prepared.root_uuid,
            "-L",
            "root",
            "-E",
            f"offset={layout.root_start * SECTOR}",
            "-d",
            str(tree),
            str(raw.path),
            f"{layout.root_bytes // 1024}k",
        ],
        logfile=logfile,
        pass_fds=raw.pass_fds,
    )
    if layout.boot is BootMode.BIOS:
        write_boot_code(raw.path, tree)


def make_disk(
    prepared: PreparedTree,
    workdir: Path,
    *,
    formats: tuple[DiskFormat, ...],
    basename: str,
    compress: bool = False,
    logfile: IO[str] | None = None,
) -> AssembledDisk:
    """Steps 3-6: the prepared tree as bootable disk images in ``workdir``; the tree goes.

    ``compress``: the qcow2 is written with compressed clusters (:func:`convert_argv`).
    """
    layout, tree = prepared.layout, prepared.tree
    path = workdir / f"{basename}.raw"
    keep_raw = DiskFormat.RAW in formats
    in_memory = not keep_raw and fits_in_memory(layout.disk_bytes)
    images: dict[DiskFormat, Path] = {}
    try:
        with raw_disk(path, layout.disk_bytes, in_memory=in_memory) as raw:
            if logfile is not None and raw.in_memory:
                logfile.write(f"# the raw disk is made in memory: {raw.path} is a memfd\n")
            _fill_raw(prepared, raw, logfile)
            for fmt in formats:
                if fmt is DiskFormat.RAW:
                    continue
                target = workdir / f"{basename}.{fmt}"
                run(
                    convert_argv(raw.path, target, fmt, compress=compress),
                    logfile=logfile,
                    pass_fds=raw.pass_fds,
                )
                images[fmt] = target
    finally:
        release_tree(tree, logfile)
    if keep_raw:
        images[DiskFormat.RAW] = path
    else:
        path.unlink(missing_ok=True)
    return AssembledDisk(
        images=images,
        root_uuid=prepared.root_uuid,
        kernel=prepared.kernel,
        content_bytes=prepared.content_bytes,
        partition_table=layout.partition_table,
        esp_uuid=prepared.esp_uuid,
    )
