"""Detect a disk image's format from its headers and refuse hostile images.

A hypervisor host must judge a disk image *before* ``qemu-img`` or libguestfs
open it: both auto-detect formats, follow backing files and external data
files, and so let an image read host files (``/etc/shadow``, ``/dev/sda``) or
reach the network (``http://``, ``json:{...}``). This module reads only the
image's own headers, in pure Python, with hard caps, and never follows any
reference the image makes.

* :func:`detect` names the format (``raw``, ``qcow2`` and every other format
  qemu would probe: ``qcow``, ``qed``, ``vmdk``, ``vhdx``, ``vpc``, ``vdi``,
  ``luks``, ``parallels``, ``bochs``, ``cloop``, ``dmg``, ``iso``) and parses
  what matters from the header, recording header problems in
  :attr:`DiskInfo.problems`.
* :func:`check_safe` applies the policy and raises :class:`UnsafeImageError`
  listing *every* reason found, each with a stable code (see :data:`REASONS`).

Reading. The file is ``lstat``-ed first and must be a regular file: symlinks,
fifos, sockets, directories and device nodes are refused without opening them
(opening a tape device can rewind it; opening a fifo blocks). It is then opened
``O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`` and ``fstat``-ed;
if the inode differs from the ``lstat`` result (the path was swapped in
between) it is refused. ``O_NOFOLLOW`` guards only the last path component:
directories on the way are resolved normally, as the caller chose them. At most
:data:`HEADER_CAP` bytes are read from the start and :data:`TAIL_SIZE` from the
end (VHD and DMG keep their footer there); nothing else.

Policy decisions (qcow2):

* any backing file is refused (it is how an image reads host files or URLs);
  so is an external data file (header extension ``0x44415441``, incompatible
  bit 2, autoclear bit 1) and the encryption header pointer;
* incompatible features: dirty (bit 0) and corrupt (bit 1) are refused, an
  unclean image must not boot; compression type (bit 3) is refused, only
  zlib (the default, what ``qemu-img convert -c`` writes) is accepted, so the
  host needs no zstd decoder exposed to guest-supplied data; extended L2
  entries (bit 4) are accepted, they change only the in-file layout; every
  unknown bit (5-63) is refused. Compatible and autoclear bits other than
  raw-external-data are harmless by the spec's definition and only recorded;
* every L1 and L2 entry must point inside the file: a standard cluster at a
  cluster-aligned offset, a compressed one (``qemu-img convert -c``) with the
  whole byte range qemu reads for it (its offset and sector count, see
  :func:`_l2_entry_problem`) after the header cluster and inside the file,
  never with the "copied" bit or (extended L2) a subcluster bitmap;
* versions other than 2 and 3, ``crypt_method`` other than 0, ``cluster_bits``
  outside 9..21, a bad ``header_length``, an unterminated or overrunning
  header extension area, an L1 table too small for the virtual size or outside
  the file, a misplaced refcount table, and internal snapshots (a hidden
  second disk state nobody built) are refused.

Sizes: a sparse qcow2 legitimately has a virtual size far larger than its
file, so the default policy caps the *absolute* virtual size
(``max_virtual_size``, 256 GiB) instead of a ratio; ``max_ratio`` is available
for callers who want both. Compressed qcow2 clusters each inflate to at most
one cluster, so a "compression bomb" is bounded by the virtual size, which is
capped. For raw images the virtual size is the file size.

After :func:`check_safe` passes, hand the image to qemu with the format made
explicit (``-f raw`` / ``driver=qcow2``), never with auto-detection, and with
the recorded format, never a re-detection: a booted guest can rewrite its
disk's first sector.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from imagefactory.errors import InputError
from imagefactory.model.reason import Reason, register_codes

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

HEADER_CAP = 1 * MiB
"""Most bytes ever read from the start of an image."""

TAIL_SIZE = 512
"""Bytes read from the end of an image (VHD footer, DMG trailer)."""

DEFAULT_MAX_VIRTUAL_SIZE = 256 * GiB
DEFAULT_ALLOWED_FORMATS: tuple[str, ...] = ("qcow2", "raw")

KNOWN_FORMATS = frozenset(
    {
        "raw",
        "qcow2",
        "qcow",
        "qed",
        "vmdk",
        "vhdx",
        "vpc",
        "vdi",
        "luks",
        "parallels",
        "bochs",
        "cloop",
        "dmg",
        "iso",
    }
)
"""Every format name :func:`detect` can return."""

_FORMAT_ALIASES = {"vhd": "vpc", "iso9660": "iso", "qcow1": "qcow"}

_FORMAT_TITLES = {
    "raw": "raw",
    "qcow2": "QEMU qcow2",
    "qcow": "QEMU qcow (version 1)",
    "qed": "QEMU QED",
    "vmdk": "VMware VMDK",
    "vhdx": "Hyper-V VHDX",
    "vpc": "Virtual PC VHD",
    "vdi": "VirtualBox VDI",
    "luks": "LUKS encrypted volume",
    "parallels": "Parallels",
    "bochs": "Bochs",
    "cloop": "cloop compressed loopback",
    "dmg": "Apple DMG",
    "iso": "ISO 9660 (CD image, not a disk image)",
}

REASONS: Mapping[str, str] = MappingProxyType(
    {
        "cannot-open": "the image cannot be opened or read",
        "not-regular-file": "the path is a symlink, fifo, socket, directory or device node",
        "empty-file": "the image file is empty",
        "truncated-header": "the header is shorter than its format requires",
        "declared-format-unknown": "the declared format is not a disk format we know",
        "format-confusion": "declared raw, but the bytes are a header of another format",
        "format-inspector": "OpenStack's format inspector disagrees (polyglot, bad MBR/GPT)",
        "format-mismatch": "the declared format differs from the detected one",
        "format-not-allowed": "the (detected or declared) format is not allowed by policy",
        "virtual-size-too-large": "the virtual size exceeds max_virtual_size",
        "virtual-size-ratio": "the virtual size exceeds max_ratio times the file size",
        "qcow2-version": "qcow2 version is not 2 or 3",
        "qcow2-backing-file": "qcow2 names a backing file",
        "qcow2-data-file": "qcow2 uses an external data file",
        "qcow2-encrypted": "qcow2 is encrypted",
        "qcow2-dirty": "qcow2 dirty bit is set",
        "qcow2-corrupt": "qcow2 corrupt bit is set",
        "qcow2-compression-type": "qcow2 uses a compression type other than zlib",
        "qcow2-incompatible-features": "qcow2 sets unknown incompatible feature bits",
        "qcow2-cluster-bits": "qcow2 cluster_bits outside 9..21",
        "qcow2-refcount-order": "qcow2 refcount_order above 6",
        "qcow2-header-length": "qcow2 v3 header_length invalid",
        "qcow2-header-extension": "qcow2 header extension area malformed",
        "qcow2-layout": "qcow2 size/offset fields inconsistent",
        "qcow2-snapshots": "qcow2 carries internal snapshots",
        "vmdk-extent": "VMDK descriptor references extent files",
        "vmdk-parent": "VMDK names a parent (backing) image",
        "qed-backing-file": "QED names a backing file",
        "vpc-parent": "VHD is a differencing disk with a parent",
    }
)
register_codes(REASONS)
#: The step name disk-format reasons carry.
STEP = "format"
"""The vocabulary of refusal codes, each with a one-line meaning."""

_REBUILD = "rebuild the image with imagefactory, or convert it on a trusted host"
_FLATTEN = (
    "flatten it on a trusted build host with 'qemu-img convert -O qcow2 SRC DST' "
    "(which writes a self-contained image) and publish that"
)


class UnsafeImageError(InputError):
    """A disk image is refused; :attr:`reasons` lists every reason found."""

    def __init__(self, path: Path | str, problems: Sequence[Reason]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"refusing disk image {path}: {count} {noun}",
            hint="do not let qemu-img, qemu or libguestfs open this file on a hypervisor host;"
            " the fixes above are for the image's producer, on a trusted build host",
        )
        self.path = Path(path)
        self.problems: list[Reason] = list(problems)
        self.reasons: list[str] = [p.message for p in problems]
        self.codes: list[str] = [p.code for p in problems]

    def render(self) -> str:
        lines = [self.message]
        lines += [f"  [{p.code}] {p.message}" for p in self.problems]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DiskInfo:
    """What the headers of a disk image say.

    ``virtual_size`` is in bytes; for raw it is the file size; it is ``0`` when
    the format is one this module only names without parsing its size (VHDX,
    LUKS, parallels, ...; those are refused by the default policy anyway).
    ``problems`` are the header problems :func:`detect` found; :func:`check_safe`
    refuses an image that has any.
    """

    format: str
    virtual_size: int
    file_size: int
    backing_file: str | None = None
    data_file: str | None = None
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    problems: tuple[Reason, ...] = field(default=(), hash=False)


# --------------------------------------------------------------------------- helpers


class _Findings:
    """Collects problems for one file; every message names the file and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[Reason] = []

    def add(self, code: str, problem: str, fix: str) -> None:
        self.items.append(Reason(code, STEP, f"{self.path}: {problem}; fix: {fix}"))


def _show(raw: bytes, limit: int = 200) -> str:
    """A hostile string from a header, made safe to print (quoted, escaped, cut)."""
    text = raw[:limit].decode("utf-8", errors="backslashreplace")
    shown = repr(text)
    if len(raw) > limit:
        shown += f" (+{len(raw) - limit} more bytes)"
    return shown


def _human(size: int) -> str:
    for unit, factor in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", GiB)):
        if size >= factor:
            return f"{size / factor:.4g} {unit} ({size} bytes)"
    return f"{size} bytes"


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"


def _refuse(path: Path, code: str, problem: str, fix: str) -> UnsafeImageError:
    findings = _Findings(path)
    findings.add(code, problem, fix)
    return UnsafeImageError(path, findings.items)


def _pread(fd: int, size: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_fd(path: Path, fd: int) -> tuple[bytes, bytes, int]:
    """(head, tail, file size) through an open descriptor (``path`` names it in messages)."""
    fix_path = "pass the path of the image file itself (not a link, device or pipe)"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _file_kind(st.st_mode)
            raise _refuse(path, "not-regular-file", f"is {kind}, not a regular file", fix_path)
        size = st.st_size
        head = _pread(fd, min(size, HEADER_CAP), 0)
        tail = _pread(fd, TAIL_SIZE, size - TAIL_SIZE) if size >= TAIL_SIZE else b""
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot read: {exc.strerror}", fix_path) from exc
    return head, tail, size


def _read_capped(path: Path) -> tuple[bytes, bytes, int]:
    """(head, tail, file size) of a regular file, never following a symlink."""
    fix_path = "pass the path of the image file itself (not a link, device or pipe)"
    try:
        before = os.lstat(path)
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot stat: {exc.strerror}", fix_path) from exc
    if not stat.S_ISREG(before.st_mode):
        kind = _file_kind(before.st_mode)
        raise _refuse(path, "not-regular-file", f"is {kind}, not a regular file", fix_path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot open: {exc.strerror}", fix_path) from exc
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise _refuse(
                path,
                "not-regular-file",
                "was replaced while being checked (not the regular file first seen)",
                fix_path,
            )
        size = after.st_size
        head = _pread(fd, min(size, HEADER_CAP), 0)
        tail = _pread(fd, TAIL_SIZE, size - TAIL_SIZE) if size >= TAIL_SIZE else b""
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot read: {exc.strerror}", fix_path) from exc
    finally:
        os.close(fd)
    return head, tail, size


# --------------------------------------------------------------------------- probing

_QCOW_MAGIC = b"QFI\xfb"
_QED_MAGIC = b"QED\x00"
_VDI_SIGNATURE = 0xBEDA107F
_CLOOP_MAGIC = (
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
)
_VMDK_VERSION_LINES = tuple(
    f"version={v}{eol}".encode() for v in (1, 2, 3) for eol in ("\n", "\r\n")
)


def _is_vmdk_descriptor(buf: bytes) -> bool:
    """qemu's text probe: comment and blank lines, then ``version=1|2|3``."""
    if buf.startswith(b"# Disk DescriptorFile"):
        return True
    pos, end = 0, len(buf)
    while pos < end:
        if buf[pos : pos + 1] == b"#":
            nl = buf.find(b"\n", pos)
            pos = end if nl < 0 else nl + 1
            continue
        if buf[pos : pos + 1] == b" ":
            while pos < end and buf[pos : pos + 1] == b" ":
                pos += 1
            if buf[pos : pos + 1] == b"\r":
                pos += 1
            if buf[pos : pos + 1] != b"\n":
                return False
            pos += 1
            continue
        return buf[pos:].startswith(_VMDK_VERSION_LINES)
    return False


def _probe(head: bytes, tail: bytes) -> str:
    if head.startswith(_QCOW_MAGIC):
        if len(head) >= 8 and struct.unpack_from(">I", head, 4)[0] == 1:
            return "qcow"
        return "qcow2"
    if head.startswith(_QED_MAGIC):
        return "qed"
    if head.startswith((b"KDMV", b"COWD")) or _is_vmdk_descriptor(head[:2048]):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vpc"
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == _VDI_SIGNATURE:
        return "vdi"
    if head.startswith(b"LUKS\xba\xbe"):
        return "luks"
    if head.startswith((b"WithoutFreeSpace", b"WithouFreSpacExt")):
        return "parallels"
    if head.startswith(b"Bochs Virtual HD Image"):
        return "bochs"
    if head.startswith(_CLOOP_MAGIC):
        return "cloop"
    if head[0x8001:0x8006] == b"CD001":
        return "iso"
    if tail.startswith(b"conectix"):
        return "vpc"
    if tail.startswith(b"koly"):
        return "dmg"
    return "raw"


# --------------------------------------------------------------------------- qcow2

_QCOW2_V2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes
_QCOW2_V3_FIELDS = struct.Struct(">QQQII")  # 32 bytes at offset 72
_EXT_END = 0x00000000
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_FEATURE_TABLE = 0x6803F857
_EXT_BITMAPS = 0x23852875
_EXT_CRYPTO_HEADER = 0x0537BE77
_EXT_DATA_FILE = 0x44415441
_EXT_NAMES = {
    _EXT_BACKING_FORMAT: "backing file format",
    _EXT_FEATURE_TABLE: "feature name table",
    _EXT_BITMAPS: "bitmaps",
    _EXT_CRYPTO_HEADER: "full disk encryption header pointer",
    _EXT_DATA_FILE: "external data file name",
}
_INCOMPAT_DIRTY = 1 << 0
_INCOMPAT_CORRUPT = 1 << 1
_INCOMPAT_DATA_FILE = 1 << 2
_INCOMPAT_COMPRESSION = 1 << 3
_INCOMPAT_EXTL2 = 1 << 4
_INCOMPAT_KNOWN = 0b11111
_AUTOCLEAR_RAW_DATA = 1 << 1
_MAX_L1_BYTES = 32 * MiB  # qemu's QCOW_MAX_L1_SIZE
_MAX_REFTABLE_BYTES = 8 * MiB  # qemu's QCOW_MAX_REFTABLE_SIZE
_CRYPT_NAMES = {1: "AES", 2: "LUKS"}
_COMPRESSION_NAMES = {0: "zlib", 1: "zstd"}
_ENCRYPTION_FIX = "publish an unencrypted image; encrypt at rest outside the image format"


@dataclass
class _Parsed:
    virtual_size: int = 0
    backing_file: str | None = None
    data_file: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    #: The qcow2 header, once it parsed with a sane layout (its tables are checked next).
    qcow2: _Qcow2Header | None = None


@dataclass
class _Qcow2Header:
    version: int
    backing_offset: int
    backing_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_offset: int
    reftable_offset: int
    reftable_clusters: int
    nb_snapshots: int
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    refcount_order: int = 4
    header_length: int = 72
    compression_type: int = 0

    @property
    def cluster_size(self) -> int:
        """0 when cluster_bits is out of range (then nothing cluster-based is checked)."""
        return 1 << self.cluster_bits if 9 <= self.cluster_bits <= 21 else 0

    @property
    def header_length_valid(self) -> bool:
        return self.version == 2 or (self.header_length >= 104 and self.header_length % 8 == 0)


def _bits(mask: int) -> list[int]:
    return [bit for bit in range(64) if mask >> bit & 1]


def _read_qcow2_header(head: bytes, f: _Findings) -> _Qcow2Header | None:
    if len(head) < _QCOW2_V2_HEADER.size:
        f.add(
            "truncated-header",
            f"qcow2 header is truncated: {len(head)} bytes, a qcow2 header needs at least 72",
            _REBUILD,
        )
        return None
    fields = _QCOW2_V2_HEADER.unpack_from(head, 0)
    h = _Qcow2Header(*fields[1:12])  # drop magic and snapshots_offset
    if h.version not in (2, 3):
        f.add(
            "qcow2-version",
            f"qcow2 version {h.version} is not 2 or 3; the rest of the header cannot be trusted",
            _REBUILD,
        )
        return None
    if h.version == 3:
        if len(head) < 104:
            f.add(
                "truncated-header",
                f"qcow2 v3 header is truncated: {len(head)} bytes, it needs at least 104",
                _REBUILD,
            )
            return None
        (h.incompatible, h.compatible, h.autoclear, h.refcount_order, h.header_length) = (
            _QCOW2_V3_FIELDS.unpack_from(head, 72)
        )
        if h.header_length > 104 and len(head) > 104:
            h.compression_type = head[104]
    return h


def _parse_qcow2(head: bytes, file_size: int, out: _Parsed, f: _Findings) -> None:
    h = _read_qcow2_header(head, f)
    if h is None:
        if len(head) >= 32:
            out.virtual_size = struct.unpack_from(">Q", head, 24)[0]
        return
    out.virtual_size = h.size
    out.details.update(
        version=h.version,
        cluster_bits=h.cluster_bits,
        cluster_size=h.cluster_size,
        crypt_method=h.crypt_method,
        incompatible_features=h.incompatible,
        compatible_features=h.compatible,
        autoclear_features=h.autoclear,
        refcount_order=h.refcount_order,
        header_length=h.header_length,
        compression_type=_COMPRESSION_NAMES.get(h.compression_type, str(h.compression_type)),
        nb_snapshots=h.nb_snapshots,
    )
    _check_qcow2_fields(h, f)
    _check_qcow2_backing(h, head, out, f)
    feature_names = _parse_qcow2_extensions(h, head, out, f)
    _check_qcow2_features(h, feature_names, f)
    if h.cluster_size:
        before = len(f.items)
        _check_qcow2_layout(h, file_size, f)
        if len(f.items) == before:
            out.qcow2 = h


def _check_qcow2_fields(h: _Qcow2Header, f: _Findings) -> None:
    if not h.cluster_size:
        f.add(
            "qcow2-cluster-bits",
            f"qcow2 cluster_bits is {h.cluster_bits}, outside 9..21 (512 B to 2 MiB clusters)",
            _REBUILD,
        )
    elif h.incompatible & _INCOMPAT_EXTL2 and h.cluster_bits < 14:
        f.add(
            "qcow2-cluster-bits",
            f"qcow2 uses extended L2 entries with cluster_bits {h.cluster_bits}; "
            "they need at least 14",
            _REBUILD,
        )
    if not h.header_length_valid:
        f.add(
            "qcow2-header-length",
            f"qcow2 v3 header_length is {h.header_length}; "
            "it must be at least 104 and a multiple of 8",
            _REBUILD,
        )
    elif h.cluster_size and h.header_length > h.cluster_size:
        f.add(
            "qcow2-header-length",
            f"qcow2 header_length {h.header_length} exceeds the first cluster "
            f"({h.cluster_size} bytes)",
            _REBUILD,
        )
    if h.refcount_order > 6:
        f.add(
            "qcow2-refcount-order",
            f"qcow2 refcount_order is {h.refcount_order}; the maximum is 6 (64-bit refcounts)",
            _REBUILD,
        )
    if h.crypt_method != 0:
        name = _CRYPT_NAMES.get(h.crypt_method, f"unknown method {h.crypt_method}")
        f.add(
            "qcow2-encrypted",
            f"qcow2 is encrypted (crypt_method {h.crypt_method}: {name}); the host cannot "
            "inspect or verify an encrypted image",
            _ENCRYPTION_FIX,
        )
    if h.nb_snapshots:
        f.add(
            "qcow2-snapshots",
            f"qcow2 carries {h.nb_snapshots} internal snapshot(s): disk states that were not "
            "built and checked, which a revert would expose",
            "remove them with 'qemu-img snapshot -d', or convert to a fresh image",
        )


def _check_qcow2_backing(h: _Qcow2Header, head: bytes, out: _Parsed, f: _Findings) -> None:
    """Report a backing file by name; never resolve or open it."""
    if h.backing_offset == 0:
        return
    notes: list[str] = []
    if h.backing_size > 1023:
        notes.append(f"name length {h.backing_size} exceeds the 1023-byte limit")
    end = h.backing_offset + min(h.backing_size, 1023)
    name_bytes = b""
    if end <= len(head):
        name_bytes = head[h.backing_offset : end]
    else:
        notes.append(f"name at offset {h.backing_offset} lies beyond the first {len(head)} bytes")
    name = name_bytes.decode("utf-8", errors="backslashreplace")
    out.backing_file = name
    if name.startswith("json:"):
        what = "a json: pseudo-protocol backing file (arbitrary qemu block options)"
    elif "://" in name:
        what = "a network backing file (URL)"
    elif name.startswith("/dev/"):
        what = "a host device as backing file"
    elif name.startswith("/"):
        what = "an absolute host path as backing file"
    else:
        what = "a backing file"
    extra = f" ({'; '.join(notes)})" if notes else ""
    f.add(
        "qcow2-backing-file",
        f"qcow2 names {what} {_show(name_bytes)}{extra}; qemu would open it on the host "
        "and expose its contents to the guest",
        _FLATTEN,
    )


def _parse_qcow2_extensions(
    h: _Qcow2Header, head: bytes, out: _Parsed, f: _Findings
) -> dict[tuple[int, int], str]:
    """Walk the header extensions (bounded by the first cluster); return the feature names."""
    feature_names: dict[tuple[int, int], str] = {}
    if not h.header_length_valid:
        return feature_names  # already refused; the extension area has no trustworthy start
    start = h.header_length
    limit = min(h.cluster_size or HEADER_CAP, len(head))
    if 0 < h.backing_offset < limit:
        limit = h.backing_offset  # the backing file name follows the extension area
    seen: set[int] = set()
    unknown: list[str] = []
    pos = start
    while True:
        if pos + 8 > limit:
            f.add(
                "qcow2-header-extension",
                f"qcow2 header extension area starting at {start} has no end marker "
                f"within the first {limit} bytes",
                _REBUILD,
            )
            break
        ext_type, ext_len = struct.unpack_from(">II", head, pos)
        if ext_type == _EXT_END:
            break
        data_start = pos + 8
        if data_start + ext_len > limit:
            f.add(
                "qcow2-header-extension",
                f"qcow2 header extension 0x{ext_type:08x} at offset {pos} claims {ext_len} "
                f"bytes and overruns the header area ({limit} bytes)",
                _REBUILD,
            )
            break
        if ext_type in seen:
            f.add(
                "qcow2-header-extension",
                f"qcow2 header extension 0x{ext_type:08x} "
                f"({_EXT_NAMES.get(ext_type, 'unknown')}) appears more than once",
                _REBUILD,
            )
        seen.add(ext_type)
        data = head[data_start : data_start + ext_len]
        if not _handle_qcow2_extension(
            h, ext_type, data, feature_names=feature_names, out=out, f=f
        ):
            unknown.append(f"0x{ext_type:08x}")
        pos = data_start + ((ext_len + 7) & ~7)
    out.details["extensions"] = tuple(f"0x{t:08x}" for t in sorted(seen))
    if unknown:
        out.details["unknown_extensions"] = tuple(unknown)
    return feature_names


def _handle_qcow2_extension(
    h: _Qcow2Header,
    ext_type: int,
    data: bytes,
    *,
    feature_names: dict[tuple[int, int], str],
    out: _Parsed,
    f: _Findings,
) -> bool:
    """Act on one header extension; False if its type is unknown (ignorable per spec)."""
    if ext_type == _EXT_DATA_FILE:
        out.data_file = data.decode("utf-8", errors="backslashreplace")
        f.add(
            "qcow2-data-file",
            f"qcow2 names an external data file {_show(data)} (header extension "
            "0x44415441); qemu would read guest data from that host file",
            _FLATTEN,
        )
    elif ext_type == _EXT_BACKING_FORMAT:
        out.details["backing_format"] = data.decode("utf-8", errors="backslashreplace")
        if h.backing_offset == 0:
            f.add(
                "qcow2-header-extension",
                f"qcow2 has a backing-format extension {_show(data)} but no backing file: "
                "inconsistent header",
                _REBUILD,
            )
    elif ext_type == _EXT_CRYPTO_HEADER:
        f.add(
            "qcow2-encrypted",
            "qcow2 has a full disk encryption header extension (0x0537be77)",
            _ENCRYPTION_FIX,
        )
    elif ext_type == _EXT_FEATURE_TABLE:
        for entry in range(0, len(data) - 47, 48):
            kind, bit = data[entry], data[entry + 1]
            raw_name = data[entry + 2 : entry + 48].split(b"\x00", 1)[0]
            feature_names[(kind, bit)] = raw_name.decode("utf-8", errors="backslashreplace")
    elif ext_type == _EXT_BITMAPS:
        out.details["bitmaps"] = True
    else:
        return False
    return True


def _check_qcow2_features(
    h: _Qcow2Header, feature_names: Mapping[tuple[int, int], str], f: _Findings
) -> None:
    if h.incompatible & _INCOMPAT_DIRTY:
        f.add(
            "qcow2-dirty",
            "qcow2 dirty bit is set (incompatible feature bit 0): the image was not closed "
            "cleanly and its refcounts may be inconsistent",
            "run 'qemu-img check -r all' on a trusted host and re-sign, or rebuild",
        )
    if h.incompatible & _INCOMPAT_CORRUPT:
        f.add(
            "qcow2-corrupt",
            "qcow2 corrupt bit is set (incompatible feature bit 1): qemu found its metadata "
            "corrupt",
            _REBUILD,
        )
    if h.incompatible & _INCOMPAT_DATA_FILE:
        f.add(
            "qcow2-data-file",
            "qcow2 external data file bit is set (incompatible feature bit 2): guest data "
            "lives in another host file",
            _FLATTEN,
        )
    if h.autoclear & _AUTOCLEAR_RAW_DATA:
        f.add(
            "qcow2-data-file",
            "qcow2 raw external data bit is set (autoclear bit 1): guest data lives in "
            "another host file",
            _FLATTEN,
        )
    if h.incompatible & _INCOMPAT_COMPRESSION:
        name = _COMPRESSION_NAMES.get(h.compression_type, f"unknown type {h.compression_type}")
        f.add(
            "qcow2-compression-type",
            f"qcow2 uses compression type {name} (incompatible feature bit 3); "
            "policy accepts zlib only",
            "recompress with 'qemu-img convert -c -O qcow2 -o compression_type=zlib'",
        )
    elif h.compression_type != 0:
        f.add(
            "qcow2-compression-type",
            f"qcow2 compression_type field is {h.compression_type} but the compression type "
            "bit is clear: inconsistent header",
            _REBUILD,
        )
    unknown = h.incompatible & ~_INCOMPAT_KNOWN
    if unknown:
        labels = []
        for bit in _bits(unknown):
            label = feature_names.get((0, bit))
            labels.append(f"{bit} ({_show(label.encode())})" if label else str(bit))
        f.add(
            "qcow2-incompatible-features",
            f"qcow2 sets unknown incompatible feature bits {', '.join(labels)}; "
            "the spec says such an image must not be opened",
            _REBUILD,
        )


def _check_qcow2_layout(h: _Qcow2Header, file_size: int, f: _Findings) -> None:
    cluster_size = h.cluster_size
    l2_entries = cluster_size // (16 if h.incompatible & _INCOMPAT_EXTL2 else 8)
    needed_l1 = -(-h.size // (cluster_size * l2_entries))  # exact integer ceil
    if h.l1_size < needed_l1:
        f.add(
            "qcow2-layout",
            f"qcow2 L1 table has {h.l1_size} entries but the virtual size {_human(h.size)} "
            f"needs {needed_l1}",
            _REBUILD,
        )
    if h.l1_size * 8 > _MAX_L1_BYTES:
        f.add(
            "qcow2-layout",
            f"qcow2 L1 table of {h.l1_size} entries exceeds qemu's 32 MiB limit",
            _REBUILD,
        )
    if h.l1_size:
        if h.l1_offset % cluster_size or h.l1_offset < cluster_size:
            f.add(
                "qcow2-layout",
                f"qcow2 L1 table offset {h.l1_offset} is not a cluster-aligned offset "
                "after the header",
                _REBUILD,
            )
        if h.l1_offset + h.l1_size * 8 > file_size:
            f.add(
                "qcow2-layout",
                f"qcow2 L1 table ({h.l1_size} entries at offset {h.l1_offset}) extends past "
                f"the end of the {file_size}-byte file",
                _REBUILD,
            )
    if h.reftable_offset % cluster_size or h.reftable_offset < cluster_size:
        f.add(
            "qcow2-layout",
            f"qcow2 refcount table offset {h.reftable_offset} is not a cluster-aligned offset "
            "after the header",
            _REBUILD,
        )
    reftable_bytes = h.reftable_clusters * cluster_size
    if h.reftable_clusters == 0 or reftable_bytes > _MAX_REFTABLE_BYTES:
        f.add(
            "qcow2-layout",
            f"qcow2 refcount table size of {h.reftable_clusters} clusters is invalid",
            _REBUILD,
        )
    elif h.reftable_offset >= file_size:
        f.add(
            "qcow2-layout",
            f"qcow2 refcount table (offset {h.reftable_offset}) starts past the end of the "
            f"{file_size}-byte file",
            _REBUILD,
        )


#: Most L2 table bytes read to check where they point (the policy's size cap keeps
#: real images far below: 256 GiB in 64 KiB clusters is 32 MiB of L2 tables).
_MAX_L2_CHECK_BYTES = 64 * MiB
_OFFSET_MASK = 0x00FFFFFFFFFFFE00  # bits 9-55: a cluster's host offset
_L2_COMPRESSED = 1 << 62
_L2_COPIED = 1 << 63
_SECTOR = 512


def _check_qcow2_tables(fd: int, h: _Qcow2Header, file_size: int, f: _Findings) -> None:
    """Every L1, L2 and refcount table entry must point at a cluster inside the file.

    qemu follows these offsets; one past the end of the file is a crafted image
    (or a truncated one), so refuse rather than guess what qemu would read.
    """
    cluster = h.cluster_size
    reftable = _pread(fd, h.reftable_clusters * cluster, h.reftable_offset)
    bad = [
        e & ~0x1FF
        for (e,) in struct.iter_unpack(">Q", reftable[: len(reftable) // 8 * 8])
        if e & ~0x1FF and (e & ~0x1FF >= file_size or e & 0x1FF or (e & ~0x1FF) % cluster)
    ]
    if bad:
        f.add(
            "qcow2-layout",
            f"qcow2 refcount table points at {len(bad)} cluster(s) outside the file or"
            f" unaligned (first at offset {bad[0]})",
            _REBUILD,
        )
    l1 = _pread(fd, h.l1_size * 8, h.l1_offset)
    l2_offsets = []
    for (entry,) in struct.iter_unpack(">Q", l1[: len(l1) // 8 * 8]):
        offset = entry & _OFFSET_MASK
        if not offset:
            continue
        if offset + cluster > file_size:
            f.add(
                "qcow2-layout",
                f"qcow2 L1 table points at an L2 table at offset {offset}, past the end of"
                f" the {file_size}-byte file",
                _REBUILD,
            )
            return
        l2_offsets.append(offset)
    if len(l2_offsets) * cluster > _MAX_L2_CHECK_BYTES:
        f.add(
            "qcow2-layout",
            f"qcow2 image has {len(l2_offsets)} L2 tables, more than are checked",
            _REBUILD,
        )
        return
    # An extended L2 entry is the standard one followed by a subcluster bitmap.
    layout = struct.Struct(">QQ" if h.incompatible & _INCOMPAT_EXTL2 else ">Q")
    for table in l2_offsets:
        data = _pread(fd, cluster, table)
        data = data[: len(data) // layout.size * layout.size]
        for index, (entry, *bitmap) in enumerate(layout.iter_unpack(data)):
            offset = entry & _OFFSET_MASK
            if not entry & _L2_COMPRESSED and (
                not offset or (offset < file_size and not offset % cluster)
            ):
                continue  # the common case, checked inline: unallocated or a sane cluster
            problem = _l2_entry_problem(
                entry, bitmap[0] if bitmap else 0, h.cluster_bits, file_size
            )
            if problem is not None:
                f.add(
                    "qcow2-layout",
                    f"qcow2 L2 table at offset {table}, entry {index}: {problem}",
                    _REBUILD,
                )
                return


def _l2_entry_problem(entry: int, bitmap: int, cluster_bits: int, file_size: int) -> str | None:
    """Why one L2 entry is refused (docs/interop/qcow2.txt, "Cluster mapping"), or ``None``.

    A standard cluster's host offset (bits 9-55) must be cluster-aligned and in
    the file. A compressed one (bit 62) packs a byte offset into its low
    ``x = 62 - (cluster_bits - 8)`` bits and, above them up to bit 61, the
    number of 512-byte sectors after the one holding that offset: qemu reads
    ``sectors * 512 - offset % 512`` bytes from there, so that whole range must
    lie in the file (its last sector may be the file's partial last one: qemu
    reads zeros past the end), after the header cluster. Bit 63 ("copied",
    refcount exactly one) is never set on a compressed cluster, bits of the
    offset above 55 are zero, and with extended L2 entries its subcluster
    bitmap is reserved, zero.
    """
    cluster = 1 << cluster_bits
    if not entry & _L2_COMPRESSED:
        offset = entry & _OFFSET_MASK
        if offset and (offset >= file_size or offset % cluster):
            return f"maps data to offset {offset}, outside the {file_size}-byte file or unaligned"
        return None
    x = 62 - (cluster_bits - 8)
    offset = entry & ((1 << x) - 1)
    sectors = (entry >> x & ((1 << (62 - x)) - 1)) + 1
    end = offset - offset % _SECTOR + sectors * _SECTOR
    what = f"a compressed cluster at offset {offset} ({sectors} sectors, to byte {end})"
    if entry & _L2_COPIED:
        return f"{what} has the copied bit (63) set, which a compressed cluster never has"
    if offset >> 56:
        return f"{what} sets offset bits above 55, which must be zero"
    if bitmap:
        return f"{what} has a subcluster bitmap (0x{bitmap:016x}), which must be zero"
    if offset < cluster:
        return f"{what} lies in the header cluster"
    if offset >= file_size or end > -(-file_size // _SECTOR) * _SECTOR:
        return f"{what} runs past the end of the {file_size}-byte file"
    return None


# --------------------------------------------------------------------------- other formats

# Linear-time patterns only: the text is hostile (no \s* that can span lines,
# bounded quoted strings), so a crafted 1 MiB descriptor cannot cause backtracking.
# qemu reads an extent line with sscanf("%10s %" SCNd64 " %10s \"%511[^\n\r\"]\""): any
# whitespace separates the fields, \v, \f and \r included, not only spaces and tabs.
_VMDK_SPACE = r"[ \t\r\v\f]"
_VMDK_EXTENT = re.compile(
    rf"^{_VMDK_SPACE}*(RW|RDONLY|NOACCESS){_VMDK_SPACE}+(\d{{1,20}}){_VMDK_SPACE}+(\w{{1,32}})"
    rf'(?:{_VMDK_SPACE}+"([^"\n\r]{{0,4096}})")?',
    re.MULTILINE,
)
_VMDK_PARENT = re.compile(r'parentFileNameHint[ \t]*=[ \t]*"([^"\n]{0,4096})"')
_VMDK_CREATE_TYPE = re.compile(r'createType[ \t]*=[ \t]*"([^"\n]{0,256})"')
_SELF_CONTAINED_FIX = (
    "convert to a single self-contained qcow2 with 'qemu-img convert -O qcow2' on a trusted host"
)


def _parse_vmdk_descriptor(
    text: bytes, out: _Parsed, f: _Findings, *, extents_followed: bool
) -> None:
    desc = text.split(b"\x00", 1)[0].decode("utf-8", errors="backslashreplace")
    create = _VMDK_CREATE_TYPE.search(desc)
    if create:
        out.details["create_type"] = create.group(1)
    extents: list[str] = []
    sectors = 0
    for match in _VMDK_EXTENT.finditer(desc):
        sectors += int(match.group(2))
        if match.group(4) is not None:
            extents.append(match.group(4))
    out.details["extents"] = tuple(extents)
    if not out.virtual_size:
        out.virtual_size = sectors * 512
    if extents and extents_followed:
        shown = ", ".join(_show(e.encode()) for e in extents[:10])
        more = f" and {len(extents) - 10} more" if len(extents) > 10 else ""
        f.add(
            "vmdk-extent",
            f"VMDK descriptor references extent file(s) {shown}{more}; qemu would open "
            "those host paths and expose them to the guest",
            _SELF_CONTAINED_FIX,
        )
    if "parentFileNameHint" in desc:
        parent = _VMDK_PARENT.search(desc)
        name = parent.group(1) if parent else "(unparsable)"
        out.backing_file = name
        f.add(
            "vmdk-parent",
            f"VMDK names a parent image {_show(name.encode())} (parentFileNameHint); qemu "
            "would open it as a backing file",
            _SELF_CONTAINED_FIX,
        )


def _parse_vmdk(head: bytes, file_size: int, out: _Parsed, f: _Findings) -> None:
    if head.startswith(b"KDMV"):
        if len(head) < 44:
            f.add("truncated-header", "VMDK sparse header is truncated", _REBUILD)
            return
        capacity, _grain, desc_offset, desc_size = struct.unpack_from("<QQQQ", head, 12)
        out.virtual_size = capacity * 512
        out.details["variant"] = "monolithicSparse"
        if desc_offset and desc_size:
            start = desc_offset * 512
            end = min(start + min(desc_size, 2048) * 512, len(head))
            # qemu treats the embedded descriptor as a descriptor *file*, and opens
            # its extents, when capacity is 0; otherwise the file is its own extent.
            follows = capacity == 0
            _parse_vmdk_descriptor(head[start:end], out, f, extents_followed=follows)
            if follows and not out.details.get("extents"):
                f.add(
                    "vmdk-extent",
                    "VMDK sparse header has capacity 0 and an embedded descriptor, which qemu "
                    "opens as a descriptor file with extents (none parsed within the read cap)",
                    _SELF_CONTAINED_FIX,
                )
    elif head.startswith(b"COWD"):
        out.details["variant"] = "vmdk3"
        if len(head) >= 16:
            out.virtual_size = struct.unpack_from("<I", head, 12)[0] * 512
    else:
        out.details["variant"] = "descriptor"
        _parse_vmdk_descriptor(head, out, f, extents_followed=True)
        if file_size > len(head):
            f.add(
                "vmdk-extent",
                f"VMDK descriptor file is {file_size} bytes, more than the {len(head)}-byte "
                "read cap; its extents cannot all be checked",
                _SELF_CONTAINED_FIX,
            )


def _parse_other(fmt: str, head: bytes, tail: bytes, out: _Parsed, f: _Findings) -> None:
    if fmt == "qed" and len(head) >= 64:
        (features, l1_offset, image_size, name_offset, name_size) = struct.unpack_from(
            "<Q16xQQII", head, 16
        )
        out.virtual_size = image_size
        out.details.update(features=features, l1_table_offset=l1_offset)
        if features & 1:
            name = head[name_offset : name_offset + min(name_size, 1023)]
            out.backing_file = name.decode("utf-8", errors="backslashreplace")
            f.add(
                "qed-backing-file",
                f"QED names a backing file {_show(name)}; qemu would open it on the host",
                _FLATTEN,
            )
    elif fmt == "vdi" and len(head) >= 0x178:
        out.virtual_size = struct.unpack_from("<Q", head, 0x170)[0]
        out.details["version"] = struct.unpack_from("<I", head, 0x44)[0]
    elif fmt == "vpc":
        footer = head if head.startswith(b"conectix") else tail
        out.details["variant"] = "dynamic" if footer is head else "fixed"
        if len(footer) >= 64:
            current_size, disk_type = struct.unpack_from(">Q4xI", footer, 48)
            out.virtual_size = current_size
            out.details["disk_type"] = disk_type
            if disk_type == 4:
                f.add(
                    "vpc-parent",
                    "VHD is a differencing disk (disk type 4): qemu would open its parent "
                    "image on the host",
                    _SELF_CONTAINED_FIX,
                )
    elif fmt == "qcow" and len(head) >= 32:
        backing_offset, _bsize, _mtime, size = struct.unpack_from(">QIIQ", head, 8)
        out.virtual_size = size
        if backing_offset:
            out.backing_file = "(present)"
            out.details["has_backing_file"] = True


# --------------------------------------------------------------------------- API


def _with_fd(path: Path, fd: int | None, use: Callable[[int], None]) -> None:
    """``use`` the caller's descriptor, or one opened here as :func:`_read_capped` does."""
    if fd is not None:
        use(fd)
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        own = os.open(path, flags)
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot open: {exc.strerror}", _REBUILD) from exc
    try:
        use(own)
    except OSError as exc:
        raise _refuse(path, "cannot-open", f"cannot read: {exc.strerror}", _REBUILD) from exc
    finally:
        os.close(own)


def detect(path: Path, *, fd: int | None = None) -> DiskInfo:
    """Name the format of the image at ``path`` from its headers, without trusting it.

    Never follows a backing file, extent or data file; reads at most
    :data:`HEADER_CAP` bytes from the start and :data:`TAIL_SIZE` from the end.
    Raises :class:`UnsafeImageError` when the path is not a regular file
    (symlink, fifo, device node, directory, socket) or cannot be read. Header
    problems do not raise; they are returned in :attr:`DiskInfo.problems`.

    With ``fd``, the bytes are read (``pread``) through that open descriptor
    and ``path`` only names it: the caller checks exactly what it will hand on.
    """
    path = Path(path)
    head, tail, file_size = _read_capped(path) if fd is None else _read_fd(path, fd)
    fmt = _probe(head, tail)
    out = _Parsed()
    findings = _Findings(path)
    if fmt == "raw":
        out.virtual_size = file_size
    elif fmt == "qcow2":
        _parse_qcow2(head, file_size, out, findings)
        header = out.qcow2
        if header is not None:
            _with_fd(path, fd, lambda d: _check_qcow2_tables(d, header, file_size, findings))
    elif fmt == "vmdk":
        _parse_vmdk(head, file_size, out, findings)
    else:
        _parse_other(fmt, head, tail, out, findings)
    return DiskInfo(
        format=fmt,
        virtual_size=out.virtual_size,
        file_size=file_size,
        backing_file=out.backing_file,
        data_file=out.data_file,
        details=MappingProxyType(out.details),
        problems=tuple(findings.items),
    )


def _normalise_format(name: str) -> str:
    lowered = name.strip().lower()
    return _FORMAT_ALIASES.get(lowered, lowered)


def check_safe(
    path: Path,
    *,
    allowed_formats: Collection[str] = DEFAULT_ALLOWED_FORMATS,
    declared_format: str | None = None,
    max_virtual_size: int = DEFAULT_MAX_VIRTUAL_SIZE,
    max_ratio: float | None = None,
    fd: int | None = None,
) -> DiskInfo:
    """Return the :class:`DiskInfo` of a safe image, or raise :class:`UnsafeImageError`.

    The error lists every reason found (header problems from :func:`detect` plus
    the policy: allowed formats, declared vs detected format, size caps).
    ``max_ratio``, if given, also caps virtual size / file size for non-raw
    formats (off by default: sparse qcow2 images are legitimately large).
    ``fd``: read through this open descriptor (see :func:`detect`).
    """
    allowed = {_normalise_format(name) for name in allowed_formats}
    unknown_allowed = allowed - KNOWN_FORMATS
    if unknown_allowed:
        raise ValueError(f"allowed_formats names unknown formats: {sorted(unknown_allowed)}")
    path = Path(path)
    info = detect(path, fd=fd)
    f = _Findings(path)
    f.items.extend(info.problems)
    detected = info.format
    title = _FORMAT_TITLES[detected]
    allowed_text = ", ".join(sorted(allowed)) or "none"

    if declared_format is not None:
        declared = _normalise_format(declared_format)
        if declared not in KNOWN_FORMATS:
            f.add(
                "declared-format-unknown",
                f"declared format {_show(declared_format.encode())} is not a known disk format",
                f"declare one of: {allowed_text}",
            )
        elif declared != detected:
            if declared == "raw":
                f.add(
                    "format-confusion",
                    f"declared raw, but the file carries a {title} header (format "
                    f"confusion: anything that probes the format would open it as {detected}, "
                    "with its backing files and extents)",
                    "declare the real format; a raw disk carrying another format's header "
                    "is hostile, rebuild it",
                )
            else:
                f.add(
                    "format-mismatch",
                    f"declared format {declared} but the headers say {title}",
                    "correct the declared format in the image's metadata, or rebuild the image",
                )
        if declared in KNOWN_FORMATS and declared != detected and declared not in allowed:
            f.add(
                "format-not-allowed",
                f"declared format {declared} is not allowed (allowed: {allowed_text})",
                f"publish the image as one of: {allowed_text}",
            )

    if detected not in allowed:
        f.add(
            "format-not-allowed",
            f"format {detected} ({title}) is not allowed (allowed: {allowed_text})",
            f"convert it on a trusted host to one of: {allowed_text} "
            "(e.g. 'qemu-img convert -f <fmt> -O qcow2 SRC DST')",
        )

    if info.file_size == 0:
        f.add("empty-file", "the file is empty (0 bytes)", _REBUILD)

    if info.virtual_size > max_virtual_size:
        f.add(
            "virtual-size-too-large",
            f"virtual size {_human(info.virtual_size)} exceeds the limit "
            f"{_human(max_virtual_size)}",
            "build a smaller disk, or raise max_virtual_size for this site deliberately",
        )
    if (
        max_ratio is not None
        and detected != "raw"
        and info.virtual_size > info.file_size * max_ratio
    ):
        f.add(
            "virtual-size-ratio",
            f"virtual size {_human(info.virtual_size)} is more than {max_ratio:g} times the "
            f"file size {_human(info.file_size)}",
            "build a smaller disk, or raise max_ratio deliberately",
        )

    if f.items:
        raise UnsafeImageError(path, f.items)
    return info
