"""One libguestfs handle per image and phase, implementing :class:`GuestEditor`.

:func:`open_guest` adds the disk with its format stated explicitly (never
probed), turns the network off, forces TCG only when KVM does not really work
here (:func:`imagefactory.host.accel.kvm_works`), launches the appliance once,
finds the operating system (one Linux file system directly, anything else with
``inspect_os``) and mounts its file systems (read-only unless the caller is
hardening the image).

Every libguestfs error is translated at this boundary into :class:`GuestError`.
"""

from __future__ import annotations

import contextlib
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagefactory.errors import GuestError
from imagefactory.guest.interrupt import Interrupt, interruptible
from imagefactory.guest.view import MAX_ENTRIES, MAX_READ, Entry, cap_text

#: The libguestfs backend: the appliance is run by libguestfs itself, not libvirt.
BACKEND = "direct"
#: lstatnslist batch size (the protocol limits one message to a few MiB).
LSTAT_BATCH = 500
#: Largest find0 output accepted (a hostile file system may hold millions of names).
MAX_FIND_BYTES = 64 << 20


def _guestfs() -> Any:
    try:
        import guestfs
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise GuestError(
            "the libguestfs Python binding is not importable",
            hint="install Debian's python3-guestfs and use a venv made with "
            "--system-site-packages (scripts/setup does this)",
        ) from exc
    return guestfs


def libguestfs_version() -> str:
    """The libguestfs library version, e.g. ``1.48.6``."""
    g = _guestfs().GuestFS(python_return_dict=True)
    try:
        v = g.version()
        return f"{v['major']}.{v['minor']}.{v['release']}{v['extra']}"
    finally:
        g.close()


@dataclass
class Guest:
    """A launched handle with the guest's file systems mounted at ``/``."""

    g: Any
    readonly: bool
    root: str
    mountpoints: dict[str, str]
    accel: str
    launch_seconds: float
    _walk_cache: dict[str, list[Entry]] = field(default_factory=dict)
    #: Paths the walk listed but could not lstat (left out of its entries).
    _unstatable: set[str] = field(default_factory=set)
    _index: _TreeIndex | None = None

    # -- GuestView ---------------------------------------------------------

    def lstat(self, path: str) -> Entry | None:
        known, entry = self._lookup(path)
        if known:
            return entry
        try:
            st = self.g.lstatns(path)
        except (RuntimeError, UnicodeError):
            return None
        return _entry(path, st)

    def read(self, path: str, limit: int = MAX_READ) -> bytes | None:
        known, entry = self._lookup(path)
        if known and (entry is None or not entry.is_symlink):
            # No symlink on the way: lstat is what statns would say.
            if entry is None or not entry.is_file:
                return None
            size: int | None = entry.size
        else:
            size = None
        try:
            if size is None:
                # statns follows symlinks: only a regular file is read (a fifo would block).
                st = self.g.statns(path)
                if not stat.S_ISREG(int(st["st_mode"])):
                    return None
                size = int(st["st_size"])
            data: bytes = self.g.pread(path, min(size, limit), 0) if size else b""
        except (RuntimeError, UnicodeError):
            return None
        return data[:limit]

    def listdir(self, path: str) -> list[str]:
        known, entry = self._lookup(path)
        if known:
            if entry is None or not entry.is_dir:
                return []
            children = self._index.children if self._index is not None else {}
            return sorted(children.get(entry.path, []))[:MAX_ENTRIES]
        try:
            if not self.g.is_dir(path, followsymlinks=False):
                return []
            names: list[str] = self.g.ls(path)
        except RuntimeError:
            return []
        except UnicodeError as exc:
            # A name libguestfs cannot hand over could be anything: fail closed.
            raise GuestError(
                f"{cap_text(path)} in the image holds a file name that is not UTF-8; "
                "refusing to audit around it"
            ) from exc
        return sorted(names)[:MAX_ENTRIES]

    def walk(self, top: str = "/") -> Sequence[Entry]:
        if top in self._walk_cache:
            return self._walk_cache[top]
        below = self._walk_from_root(top)
        if below is not None:
            self._walk_cache[top] = below
            return below
        with tempfile.TemporaryDirectory(prefix="imagefactory-walk-") as tmp:
            listing = Path(tmp) / "find0"
            try:
                self.g.find0(top, str(listing))
            except RuntimeError as exc:
                raise GuestError(f"cannot list {top} in the image: {cap_text(str(exc))}") from exc
            if listing.stat().st_size > MAX_FIND_BYTES:
                raise GuestError(
                    f"the image has too many files under {top} to audit "
                    f"(listing larger than {MAX_FIND_BYTES >> 20} MiB)"
                )
            raw = listing.read_bytes().split(b"\0")
        names = [n.decode("utf-8", errors="surrogateescape") for n in raw if n]
        if len(names) > MAX_ENTRIES:
            raise GuestError(f"the image has more than {MAX_ENTRIES} files under {top}")
        by_dir: dict[str, list[str]] = {}
        base = top.rstrip("/")
        for name in names:
            parent, _, leaf = f"{base}/{name}".rpartition("/")
            by_dir.setdefault(parent or "/", []).append(leaf)
        entries: list[Entry] = []
        for parent, leaves in by_dir.items():
            for i in range(0, len(leaves), LSTAT_BATCH):
                entries += self._lstat_batch(parent, leaves[i : i + LSTAT_BATCH])
        entries.sort(key=lambda e: e.path)
        self._walk_cache[top] = entries
        return entries

    def _lookup(self, path: str) -> tuple[bool, Entry | None]:
        """``(True, lstat of path or None)`` when a cached walk of ``/`` settles it.

        Only on a read-only handle (nothing changes after the walk) and only for a
        plain absolute path whose every leading component is a real directory in
        the walk: the walk listed everything in those directories, so a name it
        does not have does not exist. A symlink, an entry the walk could not
        lstat or an unusual path gives ``(False, None)``: ask the appliance.
        """
        if not self.readonly or "/" not in self._walk_cache:
            return False, None
        if self._index is None:
            self._index = _TreeIndex.of(self._walk_cache["/"], self._unstatable)
        parts = path.split("/")
        if parts[0] != "" or path == "/" or any(p in ("", ".", "..") for p in parts[1:]):
            return False, None
        current = ""
        for part in parts[1:]:
            current = f"{current}/{part}"
            if current in self._unstatable:
                return False, None
            entry = self._index.entries.get(current)
            if current == path:
                return True, entry
            if entry is None or not entry.is_dir:
                # Missing, or a file: nothing below it. A symlink: resolve in the guest.
                return (False, None) if entry is not None and entry.is_symlink else (True, None)
        return False, None  # pragma: no cover - the loop always returns

    def _walk_from_root(self, top: str) -> list[Entry] | None:
        """``walk(top)`` cut out of a cached walk of ``/`` on a read-only handle, or None.

        Only when nothing can have changed since (read-only) and every component
        of ``top`` is a real directory in that walk (a symlink anywhere on the way
        would make ``find`` start elsewhere): then the entries under ``top`` are
        exactly those a fresh walk would return, without another listing and
        lstat round trip per directory.
        """
        root = self._walk_cache.get("/")
        base = top.rstrip("/")
        if not self.readonly or root is None or not base.startswith("/"):
            return None
        by_path = {e.path: e for e in root}
        parts = base.split("/")[1:]
        for i in range(1, len(parts) + 1):
            entry = by_path.get("/" + "/".join(parts[:i]))
            if entry is None or not entry.is_dir:
                return None
        prefix = base + "/"
        return [e for e in root if e.path.startswith(prefix)]

    def _lstat_batch(self, parent: str, leaves: list[str]) -> list[Entry]:
        """lstat ``leaves`` of ``parent``; fail closed on any name that cannot be checked.

        An entry the audit cannot stat could hide a setuid binary, so it stops the
        audit instead of being skipped (names that are not UTF-8 cannot be passed
        back to libguestfs at all).
        """
        prefix = parent.rstrip("/")
        try:
            stats = self.g.lstatnslist(parent, leaves)
        except (RuntimeError, UnicodeEncodeError):
            stats = []
            for leaf in leaves:
                try:
                    stats.append(self.g.lstatns(f"{prefix}/{leaf}"))
                except (RuntimeError, UnicodeEncodeError) as exc:
                    raise GuestError(
                        f"cannot examine {cap_text(f'{prefix}/{leaf}')} in the image; "
                        "refusing to audit around it"
                    ) from exc
        entries = []
        for leaf, listed in zip(leaves, stats, strict=True):
            path, st = f"{prefix}/{leaf}", listed
            if st["st_ino"] == -1:
                # lstatnslist marks an entry it could not stat; ask once more on
                # its own, and fail closed if it still cannot be examined.
                self._unstatable.add(path)
                try:
                    st = self.g.lstatns(path)
                except (RuntimeError, UnicodeEncodeError) as exc:
                    raise GuestError(
                        f"cannot examine {cap_text(path)} in the image; refusing to audit around it"
                    ) from exc
            entries.append(_entry(path, st))
        return entries

    # -- GuestEditor -------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise GuestError("internal error: write to a read-only guest handle")

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._writable()
        self._walk_cache.clear()
        try:
            self.g.write(path, data)
            self.g.chmod(mode, path)
        except RuntimeError as exc:
            raise GuestError(f"cannot write {path} in the image: {exc}") from exc

    def remove(self, path: str) -> None:
        self._writable()
        self._walk_cache.clear()
        try:
            self.g.rm_rf(path)
        except RuntimeError as exc:
            raise GuestError(f"cannot remove {path} in the image: {exc}") from exc

    def chmod(self, path: str, mode: int) -> None:
        self._writable()
        self._walk_cache.clear()
        try:
            self.g.chmod(mode, path)
        except RuntimeError as exc:
            raise GuestError(f"cannot chmod {path} in the image: {exc}") from exc

    def truncate(self, path: str) -> None:
        self._writable()
        try:
            self.g.truncate(path)
        except RuntimeError as exc:
            raise GuestError(f"cannot truncate {path} in the image: {exc}") from exc

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._writable()
        self._walk_cache.clear()
        try:
            self.g.mkdir_p(path)
            self.g.chmod(mode, path)
        except RuntimeError as exc:
            raise GuestError(f"cannot create {path} in the image: {exc}") from exc


@dataclass(frozen=True)
class _TreeIndex:
    """A complete walk of ``/`` by path, and each directory's names."""

    entries: dict[str, Entry]
    children: dict[str, list[str]]

    @classmethod
    def of(cls, walk: Sequence[Entry], unstatable: set[str]) -> _TreeIndex:
        children: dict[str, list[str]] = {}
        for path in sorted({e.path for e in walk} | unstatable):
            parent, _, leaf = path.rpartition("/")
            children.setdefault(parent or "/", []).append(leaf)
        return cls({e.path: e for e in walk}, children)


def _entry(path: str, st: dict[str, int]) -> Entry:
    return Entry(
        path=path,
        mode=int(st["st_mode"]),
        uid=int(st["st_uid"]),
        gid=int(st["st_gid"]),
        size=int(st["st_size"]),
        mtime=int(st["st_mtime_sec"]),
        ino=int(st["st_ino"]),
        nlink=int(st["st_nlink"]),
    )


#: File systems a Linux root can be on.
LINUX_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs")


def _find_root(g: Any, image: Path, *, keep_mounted: bool) -> tuple[str, dict[str, str], bool]:
    """The root file system, where each file system mounts, and whether it is mounted.

    The common case, one Linux file system on the disk, is found by looking at
    the partitions (well under a second under TCG); anything else goes to
    libguestfs' full ``inspect_os`` (several seconds), which reads the guest's
    fstab to place separate ``/boot``, ``/var``... file systems.

    With ``keep_mounted`` (a read-only handle) the single file system stays
    mounted read-only at ``/`` as it was examined (saves an unmount and a
    remount); otherwise everything is unmounted again.
    """
    devices = list(g.list_partitions()) or list(g.list_devices())
    linux = []
    for device in devices:
        try:
            if g.vfs_type(device) in LINUX_FS:
                linux.append(device)
        except RuntimeError:
            continue
    found = False
    if len(linux) == 1:
        g.mount_ro(linux[0], "/")
        try:
            if g.is_file("/etc/os-release", followsymlinks=True) and g.is_file(
                "/etc/fstab", followsymlinks=False
            ):
                fstab = g.pread("/etc/fstab", 65536, 0).decode("utf-8", "replace")
                separate = [
                    line.split()[1]
                    for line in fstab.splitlines()
                    if len(line.split()) >= 3
                    and not line.startswith("#")
                    and line.split()[1] not in ("/", "none", "swap")
                    and line.split()[2] in LINUX_FS
                ]
                if not separate:
                    found = True
                    return linux[0], {"/": linux[0]}, keep_mounted
        finally:
            if not (found and keep_mounted):
                g.umount_all()
    roots = g.inspect_os()
    if len(roots) != 1:
        raise GuestError(f"{image}: expected one operating system in the image, found {len(roots)}")
    return roots[0], dict(g.inspect_get_mountpoints(roots[0])), False


@contextlib.contextmanager
def open_guest(
    image: Path,
    fmt: str,
    *,
    readonly: bool = True,
    accel: str,
    smp: int = 1,
    appliance: Path | None = None,
) -> Iterator[Guest]:
    """Launch one appliance on ``image`` (format ``fmt``, stated, never probed).

    Read-only handles add the drive with ``readonly=1`` (libguestfs puts a
    throw-away overlay in front) and mount with ``mount_ro``. The network is
    always off. ``accel`` is ``kvm`` or ``tcg``, already decided by the caller
    (:func:`imagefactory.host.accel.choose_guest_accel`). ``smp``: the
    appliance's vCPUs (its kernel boots about a second sooner with two under
    TCG, where each vCPU is a host thread). ``appliance``: a libguestfs fixed
    appliance to boot instead of libguestfs's own
    (:func:`imagefactory.host.appliance.fast_appliance`).
    """
    if fmt not in ("qcow2", "raw"):
        raise GuestError(f"internal error: refusing to open a {fmt!r} disk with libguestfs")
    if accel not in ("kvm", "tcg"):
        raise GuestError(f"internal error: unknown appliance accelerator {accel!r}")
    gfs = _guestfs()
    with interruptible() as interrupt:  # Ctrl-C kills the appliance, even inside a long call
        yield from _open_guest(
            gfs,
            image,
            fmt,
            readonly=readonly,
            accel=accel,
            smp=smp,
            appliance=appliance,
            interrupt=interrupt,
        )


def _open_guest(
    gfs: Any,
    image: Path,
    fmt: str,
    *,
    readonly: bool,
    accel: str,
    smp: int,
    appliance: Path | None,
    interrupt: Interrupt,
) -> Iterator[Guest]:
    chosen = accel
    g = gfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend(BACKEND)
        if chosen == "tcg":
            g.set_backend_settings(["force_tcg"])
        g.set_network(False)
        if smp > 1:
            g.set_smp(smp)
        if appliance is not None:
            g.set_path(str(appliance))
        g.add_drive_opts(str(image), format=fmt, readonly=1 if readonly else 0)
        started = time.monotonic()
        g.launch()
        launch_seconds = time.monotonic() - started
        root, mountpoints, mounted = _find_root(g, image, keep_mounted=readonly)
        for mountpoint in [] if mounted else sorted(mountpoints, key=len):
            if readonly:
                g.mount_ro(mountpoints[mountpoint], mountpoint)
            else:
                g.mount(mountpoints[mountpoint], mountpoint)
    except RuntimeError as exc:
        g.close()
        if interrupt.signalled.is_set():  # the appliance was killed for Ctrl-C / SIGTERM
            raise KeyboardInterrupt from exc
        raise GuestError(f"{image}: libguestfs failed: {cap_text(str(exc), 1000)}") from exc
    except BaseException:
        g.close()
        raise
    guest = Guest(
        g=g,
        readonly=readonly,
        root=root,
        mountpoints=dict(mountpoints),
        accel=chosen,
        launch_seconds=launch_seconds,
    )
    try:
        yield guest
        if not readonly:
            try:
                g.sync()
                g.umount_all()
                g.shutdown()
            except RuntimeError as exc:
                raise GuestError(f"{image}: could not write the changes: {exc}") from exc
    finally:
        g.close()


def boot_mode(guest: Guest) -> str:
    """``uefi`` for a GPT disk with an EFI system partition holding a loader, else ``bios``.

    The loader is the removable-media path ``/EFI/BOOT/BOOT<arch>.EFI`` (any
    case: FAT is case-insensitive), the one firmware boots without an NVRAM
    entry, which a disk image never brings along. The ESP is mounted where
    the image's fstab puts it (usually ``/boot/efi``); one that is not mounted
    is looked at through a read-only mount of its own.
    """
    try:
        device = guest.g.list_devices()[0]
        if guest.g.part_get_parttype(device) != "gpt":
            return "bios"
        for partition in guest.g.list_partitions():
            if guest.g.part_to_dev(partition) != device:
                continue
            number = guest.g.part_to_partnum(partition)
            is_esp = guest.g.part_get_gpt_type(device, number).upper() == ESP_GPT_TYPE
            if is_esp and _esp_has_loader(guest, partition):
                return "uefi"
    except (RuntimeError, IndexError):
        return "bios"
    return "bios"


ESP_GPT_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_EFI_LOADER = re.compile(r"(?i)^boot[a-z0-9]+\.efi$")


#: Where an ESP the image does not mount itself is mounted to be looked at:
#: the first of these that is a directory (the mount hides it only briefly).
_ESP_MOUNT_CANDIDATES = ("/boot/efi", "/efi", "/mnt")


def _esp_has_loader(guest: Guest, partition: str) -> bool:
    mounted = {device: path for path, device in guest.mountpoints.items()}
    where = mounted.get(partition)
    if where is not None:
        return _has_loader(guest, where)
    for candidate in _ESP_MOUNT_CANDIDATES:
        if guest.g.is_dir(candidate, followsymlinks=False):
            guest.g.mount_ro(partition, candidate)
            try:
                return _has_loader(guest, candidate)
            finally:
                guest.g.umount(candidate)
    return False


def _has_loader(guest: Guest, where: str) -> bool:
    efi = _child(guest, where, "EFI")
    boot = _child(guest, efi, "BOOT") if efi is not None else None
    if boot is None:
        return False
    return any(
        _EFI_LOADER.match(name) and guest.g.is_file(f"{boot}/{name}", followsymlinks=False)
        for name in guest.g.ls(boot)
    )


def _child(guest: Guest, directory: str, name: str) -> str | None:
    """``directory/name`` matched case-insensitively (FAT), if it is a directory."""
    for entry in guest.g.ls(directory):
        if entry.upper() == name.upper() and guest.g.is_dir(f"{directory}/{entry}"):
            return f"{directory.rstrip('/')}/{entry}"
    return None
