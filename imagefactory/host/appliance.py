"""The libguestfs appliance the audit boots: libguestfs's own, with its kernel unpacked.

libguestfs boots a small appliance (supermin: the host's kernel, a mini
initrd, a root file system of host packages) for every launch. Under TCG a
third of that launch is the kernel's own decompressor: the host's ``vmlinuz``
is a bzImage whose xz payload the emulated CPU unpacks before Linux starts
(4.4 s of a 15 s launch on the reference host). qemu boots an uncompressed
x86_64 kernel directly through its PVH entry point (an ELF note), with no
decompressor and no real-mode set-up.

So the appliance used here is the one libguestfs would build, made by the
same ``supermin --build`` command into our cache, then given to libguestfs
as a *fixed appliance* (``kernel``, ``initrd``, ``root``, ``README.fixed``)
whose ``kernel`` is the bzImage's payload, unpacked on the host once. The
initrd and root are supermin's, unchanged. Nothing of the guest image is
involved: this is the audit's own tool, built from the host's packages.

The appliance is rebuilt when what it is made of may have changed: the
identity (inode, size, times) of dpkg's status file (any package installed,
upgraded or removed), of libguestfs's supermin.d inputs, of the kernels in
``/boot`` and of supermin itself. Building it takes a few seconds, once.

Where it cannot be made (no supermin, a kernel compressed some other way, no
PVH note, not an x86_64 host) :func:`fast_appliance` says why and returns
``None``: libguestfs then uses its own appliance, slower and as good.
"""

from __future__ import annotations

import bz2
import fcntl
import json
import logging
import lzma
import os
import shutil
import stat
import struct
import sysconfig
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagefactory.errors import CommandError, MissingToolError
from imagefactory.fsutil import atomic_write, file_identity
from imagefactory.run import run

log = logging.getLogger(__name__)

#: Bumped when the appliance's layout or making changes: older ones are rebuilt.
APPLIANCE_SCHEMA = "imagefactory/appliance/v1"
SUPERMIN = "supermin"
DPKG_STATUS = Path("/var/lib/dpkg/status")
BOOT = Path("/boot")
#: The fixed appliance libguestfs is pointed at (``guestfs_set_path``).
FIXED_DIR = "fixed"
#: supermin's output: kernel (the bzImage), initrd, root.
SUPERMIN_DIR = "supermin"
KEY_FILE = "key.json"
#: Larger than any kernel; an unpacked payload past it is refused.
MAX_KERNEL_BYTES = 512 * 1024 * 1024
#: ``XEN_ELFNOTE_PHYS32_ENTRY``: the note qemu needs to boot an ELF kernel (PVH).
_PVH_NOTE = 18
_PT_NOTE = 4
_EM_X86_64 = 62


class KernelError(Exception):
    """The host kernel cannot be unpacked into a PVH-bootable ELF (the reason)."""


@dataclass(frozen=True)
class _Payload:
    offset: int
    length: int


def _bzimage_payload(image: bytes) -> _Payload:
    """Where the compressed kernel sits in a bzImage (boot protocol 2.08+)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise KernelError("not a bzImage (no HdrS boot header)")
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x0208:
        raise KernelError(f"boot protocol {version >> 8}.{version & 0xFF} has no payload fields")
    setup_sects = image[0x1F1] or 4
    code = (setup_sects + 1) * 512
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = code + offset
    if length == 0 or start + length > len(image):
        raise KernelError("the bzImage's payload lies outside the file")
    return _Payload(start, length)


def _decompress(data: bytes) -> bytes:
    """The payload unpacked: xz, lzma, gzip or bzip2 (the formats Python reads)."""
    try:
        if data.startswith(b"\xfd7zXZ\x00"):
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(
                data, max_length=MAX_KERNEL_BYTES + 1
            )
        elif data.startswith(b"\x5d\x00\x00"):
            out = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(
                data, max_length=MAX_KERNEL_BYTES + 1
            )
        elif data.startswith(b"\x1f\x8b"):
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, MAX_KERNEL_BYTES + 1)
        elif data.startswith(b"BZh"):
            out = bz2.BZ2Decompressor().decompress(data, max_length=MAX_KERNEL_BYTES + 1)
        else:
            raise KernelError(
                f"the kernel's payload is compressed in a format not read here ({data[:4].hex()})"
            )
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise KernelError(f"the kernel's payload does not unpack: {exc}") from exc
    if len(out) > MAX_KERNEL_BYTES:
        raise KernelError(f"the unpacked kernel is larger than {MAX_KERNEL_BYTES} bytes")
    return out


def _has_pvh_note(elf: bytes) -> bool:
    """Whether an x86_64 ELF kernel carries the PVH entry note qemu boots it by."""
    if elf[:4] != b"\x7fELF" or len(elf) < 64:
        raise KernelError("the unpacked kernel is not an ELF file")
    if elf[4] != 2 or elf[5] != 1:
        raise KernelError("the unpacked kernel is not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", elf, 18)
    if machine != _EM_X86_64:
        raise KernelError(f"the unpacked kernel is for ELF machine {machine}, not x86_64")
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + 56 > len(elf):
            raise KernelError("the unpacked kernel's program headers lie outside it")
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, at)
        if p_type == _PT_NOTE and _notes_have(
            elf[p_offset : p_offset + p_filesz], b"Xen", _PVH_NOTE
        ):
            return True
    return False


def _notes_have(notes: bytes, name: bytes, note_type: int) -> bool:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        at += 12
        owner = notes[at : at + namesz].rstrip(b"\0")
        at += (namesz + 3) & ~3
        at += (descsz + 3) & ~3
        if owner == name and kind == note_type:
            return True
    return False


def unpack_kernel(bzimage: bytes) -> bytes:
    """The ELF kernel inside ``bzimage``, checked to boot through qemu's PVH entry."""
    payload = _bzimage_payload(bzimage)
    elf = _decompress(bzimage[payload.offset : payload.offset + payload.length])
    if not _has_pvh_note(elf):
        raise KernelError(
            "the kernel has no PVH entry note (CONFIG_PVH): qemu cannot boot it unpacked"
        )
    return elf


def host_machine() -> str:
    return os.uname().machine


def supermin_inputs() -> Path | None:
    """libguestfs's supermin.d (what its appliance is made of), if installed."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    candidates = [Path(f"/usr/lib/{multiarch}/guestfs/supermin.d")] if multiarch else []
    candidates += sorted(Path("/usr/lib").glob("*/guestfs/supermin.d"))
    candidates.append(Path("/usr/lib/guestfs/supermin.d"))
    return next((c for c in candidates if c.is_dir()), None)


def _identity(path: Path) -> list[int] | None:
    try:
        return file_identity(path.stat())
    except OSError:
        return None


def appliance_key(inputs: Path, supermin: str) -> dict[str, object]:
    """What the appliance is made of, as cheap file identities (no hashing)."""
    return {
        "schema": APPLIANCE_SCHEMA,
        "dpkg_status": _identity(DPKG_STATUS),
        "supermin": _identity(Path(supermin)),
        "inputs": {p.name: _identity(p) for p in sorted(inputs.iterdir())},
        "kernels": {p.name: _identity(p) for p in sorted(BOOT.glob("vmlinuz-*"))},
    }


def _private(directory: Path) -> str | None:
    """Why ``directory`` cannot hold the audit's appliance, or ``None``."""
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):  # lstat: a symlink is not the directory it names
        return f"{directory} is not a directory"
    if st.st_uid != os.geteuid():
        return f"{directory} is owned by uid {st.st_uid}, not by this user"
    if st.st_mode & 0o022:
        return f"{directory} is writable by others (mode {st.st_mode & 0o777:o})"
    return None


def _fixed_ready(root: Path, key: dict[str, object]) -> bool:
    fixed = root / FIXED_DIR
    try:
        recorded = json.loads((root / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    kernel = _identity(fixed / "kernel")
    return (
        recorded.get("key") == json.loads(json.dumps(key))
        and kernel is not None
        and recorded.get("kernel") == kernel
        and all((fixed / n).exists() for n in ("initrd", "root", "README.fixed"))
    )


def _build(root: Path, inputs: Path, supermin: str, key: dict[str, object]) -> None:
    out = root / SUPERMIN_DIR
    run(
        [
            supermin,
            "--build",
            "--if-newer",
            "--lock",
            str(root / "supermin.lock"),
            "--copy-kernel",
            "-f",
            "ext2",
            "--host-cpu",
            host_machine(),
            str(inputs),
            "-o",
            str(out),
        ]
    )
    elf = unpack_kernel((out / "kernel").read_bytes())
    fixed = root / FIXED_DIR
    fixed.mkdir(mode=0o755, exist_ok=True)
    atomic_write(fixed / "kernel", elf, 0o644, durable=False)
    for name in ("initrd", "root"):
        link = fixed / name
        if not link.is_symlink():
            link.symlink_to(Path("..") / SUPERMIN_DIR / name)
    atomic_write(
        fixed / "README.fixed",
        "A libguestfs fixed appliance made by imagefactory: supermin's initrd and root,\n"
        "its kernel unpacked (booted through qemu's PVH entry). Rebuilt when the host's\n"
        "packages change; safe to delete.\n",
        durable=False,
    )
    record = {"key": key, "kernel": _identity(fixed / "kernel")}
    atomic_write(root / KEY_FILE, json.dumps(record, indent=2) + "\n", durable=False)


def fast_appliance(root: Path, on_status: Callable[[str], None] | None = None) -> Path | None:
    """The fixed appliance under ``root`` (made or refreshed first), or ``None``.

    ``None`` means: use libguestfs's own appliance; the reason is logged as a
    warning. ``on_status`` hears about a (re)build, which takes seconds.
    """
    if host_machine() != "x86_64":
        return None  # PVH entry is x86's; other kernels boot as they are
    supermin = shutil.which(SUPERMIN)
    inputs = supermin_inputs()
    if supermin is None or inputs is None:
        log.warning("no supermin or libguestfs supermin.d: using libguestfs's own appliance")
        return None
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _private(root)
        if problem is not None:
            log.warning("not using the appliance in %s: %s", root, problem)
            return None
        key = appliance_key(inputs, supermin)
        if _fixed_ready(root, key):
            return root / FIXED_DIR
        with open(root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time; the others wait, then reuse
            if not _fixed_ready(root, key):
                if on_status is not None:
                    on_status("making the libguestfs appliance (once, until host packages change)")
                _build(root, inputs, supermin, key)
        return root / FIXED_DIR
    except (OSError, KernelError, CommandError, MissingToolError) as exc:
        log.warning(
            "cannot make the fast libguestfs appliance in %s (%s): using libguestfs's own",
            root,
            exc,
        )
        return None
