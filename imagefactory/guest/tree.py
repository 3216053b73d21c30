"""An OS tree on the host, seen and edited as the guest would see it (a :class:`GuestEditor`).

The hardening runs over diskimage-builder's extracted tree before it becomes
a disk, on the build host, as root. The tree is hostile: a package can ship
``/etc/fstab -> /etc/passwd`` or ``/etc/ssh -> ../../../root/.ssh``, and a
naive ``open(tree / "etc/fstab", "w")`` would follow it out of the tree and
change the build host. So every path is resolved by the kernel inside the
tree, as if it were ``/`` (``openat2`` with ``RESOLVE_IN_ROOT``): an absolute
symlink starts again at the tree's root, ``..`` stops there, no magic link
(``/proc/self/...``) is followed and no mount point is crossed. That is what
libguestfs does inside its appliance, so the hardening reads and writes the
same files in the tree as it did on the disk, and records the same actions.

What is checked is what is opened: a file is first opened ``O_PATH`` (no
data, no side effects), its type checked on that descriptor, and only then
reopened through it for reading or writing; a device node or fifo in the tree
(it would be the *host's* device) is never opened for I/O. Walks and
listings never follow a symlink at all (``RESOLVE_NO_SYMLINKS``, ``O_NOFOLLOW``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from imagefactory.errors import TreeError
from imagefactory.fsutil import clone_or_copy_fd
from imagefactory.guest.view import MAX_ENTRIES, MAX_READ, Entry, cap_text

# linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
#: The syscall number is the same on x86_64 and the generic table (aarch64, ...).
SYS_OPENAT2 = 437
#: Every lookup: inside the tree, no /proc magic links, no other file system.
IN_TREE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """``openat2(2)``; raises :class:`OSError` with the errno like :func:`os.open`."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    raw = os.fsencode(path)
    fd = _syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(raw),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _magic(fd: int) -> str:
    """The /proc path that reopens exactly the inode ``fd`` holds (never a name again)."""
    return f"/proc/self/fd/{fd}"


def _entry(path: str, st: os.stat_result) -> Entry:
    return Entry(
        path=path,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        mtime=int(st.st_mtime),
        ino=st.st_ino,
        nlink=st.st_nlink,
    )


class HostTree:
    """A directory on the host holding an OS tree, as a :class:`GuestEditor`.

    Guest paths are plain absolute paths (``/etc/fstab``); anything else
    (``..``, ``.``, empty components, NUL) is refused naming it. Use as a
    context manager, or :meth:`close` it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self._fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise TreeError(f"{root}: cannot open the OS tree: {exc.strerror}") from exc
        self._dev = os.fstat(self._fd).st_dev
        try:
            os.close(openat2(self._fd, ".", os.O_PATH, resolve=IN_TREE))
        except OSError as exc:
            os.close(self._fd)
            hint = "this needs Linux 5.6 or later (openat2)" if exc.errno == errno.ENOSYS else None
            raise TreeError(
                f"{root}: cannot resolve paths safely inside the OS tree: {exc.strerror}",
                hint=hint,
            ) from exc

    def __enter__(self) -> HostTree:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- resolution ----------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        parts = path.split("/")
        if (
            not path.startswith("/")
            or "\0" in path
            or any(p in ("", ".", "..") for p in parts[1:] if path != "/")
        ):
            raise TreeError(
                f"{self.root}: refusing the guest path {cap_text(path)!r}",
                hint="only plain absolute paths (no '.', '..' or empty components) are used "
                "inside an OS tree",
            )
        return [] if path == "/" else parts[1:]

    def _open(self, path: str, flags: int, mode: int = 0, resolve: int = IN_TREE) -> int:
        parts = self._parts(path)
        return openat2(self._fd, "/".join(parts) or ".", flags, mode, resolve)

    def _parent(self, path: str) -> tuple[int, str]:
        """An ``O_PATH`` descriptor of ``path``'s directory (resolved in the tree), and the name."""
        parts = self._parts(path)
        if not parts:
            raise TreeError(f"{self.root}: refusing to change the tree's root itself")
        parent = "/" + "/".join(parts[:-1])
        return self._open(parent, os.O_PATH | os.O_DIRECTORY), parts[-1]

    def _fail(self, what: str, path: str, exc: OSError) -> TreeError:
        if exc.errno == errno.EXDEV:
            reason = "the path crosses a mount point or leaves the tree"
        else:
            reason = exc.strerror or str(exc)
        return TreeError(f"{self.root}: cannot {what} {cap_text(path)} in the OS tree: {reason}")

    # -- GuestView -----------------------------------------------------------

    def lstat(self, path: str) -> Entry | None:
        try:
            if path == "/":
                return _entry(path, os.fstat(self._fd))
            pfd, name = self._parent(path)
            try:
                return _entry(path, os.stat(name, dir_fd=pfd, follow_symlinks=False))
            finally:
                os.close(pfd)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise self._fail("examine", path, exc) from exc
            return None

    def read(self, path: str, limit: int = MAX_READ) -> bytes | None:
        try:
            fd = self._open(path, os.O_PATH)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise self._fail("read", path, exc) from exc
            return None  # missing, a dangling or looping symlink: as in the guest
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a fifo would block; a device node would be the host's
            rfd = os.open(_magic(fd), os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
        finally:
            os.close(fd)
        with os.fdopen(rfd, "rb") as f:
            return f.read(limit)

    def copy_out(self, path: str, target: Path) -> None:
        """Copy the regular file at ``path`` to ``target``, a new host file (mode 0644).

        No symlink is followed anywhere on the way (``RESOLVE_NO_SYMLINKS``), and
        the bytes come from the descriptor whose type was checked: a symlink, fifo,
        device or socket is refused naming it, never read through.
        """
        try:
            fd = self._open(path, os.O_PATH | os.O_NOFOLLOW, resolve=IN_TREE | RESOLVE_NO_SYMLINKS)
        except OSError as exc:
            raise self._fail("copy", path, exc) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TreeError(
                    f"{self.root}: cannot copy {cap_text(path)} out of the OS tree:"
                    " not a regular file"
                )
            rfd = os.open(_magic(fd), os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
        finally:
            os.close(fd)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            wfd = os.open(target, flags, 0o644)
            try:
                clone_or_copy_fd(rfd, wfd)
            finally:
                os.close(wfd)
        finally:
            os.close(rfd)

    def listdir(self, path: str) -> list[str]:
        try:
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise self._fail("list", path, exc) from exc
            return []
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in names:
            self._check_name(path, name)
        return sorted(names)[:MAX_ENTRIES]

    def _check_name(self, directory: str, name: str) -> None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            # As in the guest: a name that cannot be handed over could be anything.
            raise TreeError(
                f"{self.root}: {cap_text(directory)} holds a file name that is not UTF-8 "
                f"({cap_text(os.fsencode(name))}); refusing to harden around it"
            ) from exc

    def walk(self, top: str = "/") -> Sequence[Entry]:
        """Every entry below ``top``, never following a symlink nor leaving the file system."""
        try:
            first = self._open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise self._fail("walk", top, exc) from exc
            return []
        entries: list[Entry] = []
        pending: list[tuple[str, int | None, int]] = [(top.rstrip("/"), first, 0)]
        while pending:
            directory, fd, ino = pending.pop()
            if fd is None:
                try:
                    fd = self._open(
                        directory or "/",
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                        resolve=IN_TREE | RESOLVE_NO_SYMLINKS,
                    )
                except OSError as exc:
                    raise self._fail("walk", directory, exc) from exc
                if os.fstat(fd).st_ino != ino:
                    os.close(fd)
                    raise TreeError(
                        f"{self.root}: {cap_text(directory)} changed while the tree was walked"
                    )
            try:
                with os.scandir(fd) as listing:
                    children = [(d.name, d.stat(follow_symlinks=False)) for d in listing]
            finally:
                os.close(fd)
            for name, st in children:
                path = f"{directory}/{name}"
                self._check_name(directory or "/", name)
                if st.st_dev != self._dev:
                    raise TreeError(
                        f"{self.root}: {cap_text(path)} is another file system mounted in "
                        "the OS tree; refusing to harden across it",
                        hint="unmount it (a leftover of an interrupted build?)",
                    )
                entries.append(_entry(path, st))
                if len(entries) > MAX_ENTRIES:
                    raise TreeError(f"{self.root}: more than {MAX_ENTRIES} files under {top}")
                if stat.S_ISDIR(st.st_mode):
                    pending.append((path, None, st.st_ino))
        entries.sort(key=lambda e: e.path)
        return entries

    # -- GuestEditor ---------------------------------------------------------

    def _regular(self, path: str, what: str) -> int:
        """An ``O_PATH`` descriptor of the regular file at ``path`` (final symlink followed)."""
        fd = self._open(path, os.O_PATH)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TreeError(
                f"{self.root}: cannot {what} {cap_text(path)} in the OS tree: not a regular file"
            )
        return fd

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        try:
            try:
                fd = self._regular(path, "write")
            except FileNotFoundError:
                # O_EXCL|O_NOFOLLOW: a dangling symlink there is refused, not followed.
                try:
                    wfd = self._open(
                        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
                    )
                except FileExistsError as exc:
                    raise TreeError(
                        f"{self.root}: cannot write {cap_text(path)} in the OS tree: it is a "
                        "symlink to nothing inside the tree; refusing to write through it"
                    ) from exc
            else:
                try:
                    wfd = os.open(_magic(fd), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
                finally:
                    os.close(fd)
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
        except OSError as exc:
            raise self._fail("write", path, exc) from exc

    def remove(self, path: str) -> None:
        """``rm -rf``: a symlink itself is removed, never what it points to."""
        try:
            pfd, name = self._parent(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("remove", path, exc) from exc
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=pfd)  # by descriptors, no symlink followed
            else:
                os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("remove", path, exc) from exc
        finally:
            os.close(pfd)

    def chmod(self, path: str, mode: int) -> None:
        try:
            fd = self._open(path, os.O_PATH)
        except OSError as exc:
            raise self._fail("chmod", path, exc) from exc
        try:
            os.chmod(_magic(fd), mode)
        except OSError as exc:
            raise self._fail("chmod", path, exc) from exc
        finally:
            os.close(fd)

    def truncate(self, path: str) -> None:
        try:
            fd = self._regular(path, "truncate")
            try:
                wfd = os.open(_magic(fd), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            finally:
                os.close(fd)
            os.close(wfd)
        except OSError as exc:
            raise self._fail("truncate", path, exc) from exc

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """``mkdir -p``; missing parents get 0755, ``path`` itself ``mode``."""
        parts = self._parts(path)
        for i in range(1, len(parts) + 1):
            current = "/" + "/".join(parts[:i])
            try:
                os.close(self._open(current, os.O_PATH | os.O_DIRECTORY))
                continue
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._fail("create", current, exc) from exc
            try:
                pfd, name = self._parent(current)
                try:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                finally:
                    os.close(pfd)
            except OSError as exc:
                raise self._fail("create", current, exc) from exc
            self.chmod(current, 0o755)
        self.chmod(path, mode)
