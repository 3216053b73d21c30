"""An in-memory guest file system implementing GuestEditor (the seam libguestfs sits behind).

``unhardened_tree()`` is a small Debian-like tree as diskimage-builder leaves it
(setuid helper off the allowlist, sudo group rule, machine-id set, caches, no
sysctl hardening), so the hardening and the audit can be exercised without an
appliance. The integration tests repeat the important cases on a real image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagefactory.guest.view import MAX_READ, Entry


@dataclass
class Node:
    mode: int
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    target: str = ""


class FakeGuest:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"/": Node(stat.S_IFDIR | 0o755)}
        self.reads: list[str] = []

    # -- building --------------------------------------------------------------
    def add(self, path: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0) -> None:
        self._parents(path)
        raw = data.encode() if isinstance(data, str) else data
        self.nodes[path] = Node(stat.S_IFREG | mode, raw, uid, uid)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.nodes[path] = Node(stat.S_IFDIR | mode)

    def add_link(self, path: str, target: str) -> None:
        self._parents(path)
        self.nodes[path] = Node(stat.S_IFLNK | 0o777, target=target)

    def add_hardlink(self, path: str, existing: str) -> None:
        """A second name for the inode at ``existing``."""
        self._parents(path)
        self.nodes[path] = self.nodes[existing]

    def add_device(self, path: str, mode: int = 0o666) -> None:
        self._parents(path)
        self.nodes[path] = Node(stat.S_IFCHR | mode)

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            parent = "/" + "/".join(parts[: i + 1])
            self.nodes.setdefault(parent, Node(stat.S_IFDIR | 0o755))

    def text(self, path: str) -> str:
        return self.nodes[path].data.decode()

    # -- GuestView -------------------------------------------------------------
    def _resolve(self, path: str) -> Node | None:
        node = self.nodes.get(path)
        for _ in range(8):
            if node is None or not stat.S_ISLNK(node.mode):
                return node
            node = self.nodes.get(node.target)
        return None

    def lstat(self, path: str) -> Entry | None:
        node = self.nodes.get(path)
        if node is None:
            return None
        links = sum(1 for other in self.nodes.values() if other is node)
        return Entry(path, node.mode, node.uid, node.gid, len(node.data), 0, id(node), links)

    def read(self, path: str, limit: int = MAX_READ) -> bytes | None:
        self.reads.append(path)
        node = self._resolve(path)
        if node is None or not stat.S_ISREG(node.mode):
            return None
        return node.data[:limit]

    def listdir(self, path: str) -> list[str]:
        node = self.nodes.get(path)
        if node is None or not stat.S_ISDIR(node.mode):
            return []
        prefix = path.rstrip("/") + "/"
        return sorted(
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        )

    def walk(self, top: str = "/") -> Sequence[Entry]:
        prefix = top.rstrip("/") + "/"
        return [e for p in sorted(self.nodes) if p.startswith(prefix) if (e := self.lstat(p))]

    # -- GuestEditor -------------------------------------------------------------
    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        old = self.nodes.get(path)
        self.add(path, data, mode, old.uid if old else 0)

    def remove(self, path: str) -> None:
        for p in [p for p in self.nodes if p == path or p.startswith(path.rstrip("/") + "/")]:
            del self.nodes[p]

    def chmod(self, path: str, mode: int) -> None:
        # In place: every hard link to the inode sees the change, as on a real file system.
        node = self.nodes[path]
        node.mode = stat.S_IFMT(node.mode) | mode

    def truncate(self, path: str) -> None:
        self.nodes[path].data = b""

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self.add_dir(path, mode)


DPKG_STATUS = """Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b7
Description: GNU Bourne Again SHell
 multi-line description

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u9

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""

ELF_X86_64 = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 44


def unhardened_tree() -> FakeGuest:
    g = FakeGuest()
    g.add(
        "/etc/os-release",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
        "VERSION_CODENAME=bookworm\n",
    )
    g.add("/bin/sh", ELF_X86_64, 0o755)
    g.add("/boot/vmlinuz-6.1.0-28-amd64", b"kernel")
    g.add(
        "/boot/grub/grub.cfg", "menuentry 'x' {\n  linux /boot/vmlinuz-6.1.0-28-amd64 root=x\n}\n"
    )
    g.add(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    g.add("/etc/group", "root:x:0:\nsudo:x:27:\nnogroup:x:65534:\n")
    g.add("/etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640)
    g.add(
        "/etc/sudoers",
        "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n",
        0o440,
    )
    g.add_dir("/etc/sudoers.d")
    g.add("/etc/sudoers.d/README", "# readme\n", 0o440)
    g.add("/etc/fstab", "UUID=abc / ext4 errors=remount-ro 0 1\n")
    g.add(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n",
    )
    g.add("/etc/ssh/ssh_host_ed25519_key", "PRIVATE", 0o600)
    g.add("/etc/sysctl.conf", "# empty\n")
    g.add_link("/etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.conf")
    g.add("/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    g.add("/usr/bin/passwd", b"elf", 0o4755)
    g.add("/usr/lib/polkit-1/polkit-agent-helper-1", b"elf", 0o4755)
    g.add("/usr/share/doc/x/notes.txt", "hello", 0o666)
    g.add_device("/dev/null")
    g.add_dir("/tmp", 0o1777)
    g.add_dir("/var/tmp", 0o1777)
    g.add("/var/log/dpkg.log", "installed things\n")
    g.add("/var/log/apt/history.log.1.gz", b"gz")
    g.add("/var/cache/apt/pkgcache.bin", b"cache")
    g.add("/var/cache/debconf/config.dat-old", b"old")
    g.add("/root/.bash_history", "ls\n", 0o600)
    g.add("/lib/systemd/system/auditd.service", "[Unit]\n")
    g.add("/lib/systemd/system/rsyslog.service", "[Unit]\n")
    g.add_link("/etc/systemd/system/timers.target.wants/apt-daily.timer", "/lib/x")
    g.add_link("/etc/systemd/system/multi-user.target.wants/chrony.service", "/lib/y")
    g.add("/var/lib/dpkg/status", DPKG_STATUS)
    return g


def materialize(guest: FakeGuest, root: Path) -> Path:
    """Write ``guest``'s nodes as a real directory tree under ``root`` (as root: owners kept).

    Hard links stay hard links, symlinks stay symlinks, modes are exact; a
    device node becomes a real one only as root (else it is left out).
    """
    root.mkdir(parents=True, exist_ok=True)
    first: dict[int, str] = {}
    for path in sorted(guest.nodes, key=lambda p: (p.count("/"), p)):
        node = guest.nodes[path]
        target = root / path.lstrip("/")
        kind = stat.S_IFMT(node.mode)
        if path == "/":
            os.chmod(root, stat.S_IMODE(node.mode))
            continue
        if id(node) in first:
            os.link(root / first[id(node)].lstrip("/"), target)
            continue
        first[id(node)] = path
        if kind == stat.S_IFDIR:
            target.mkdir(exist_ok=True)
        elif kind == stat.S_IFLNK:
            target.symlink_to(node.target)
            continue
        elif kind == stat.S_IFREG:
            target.write_bytes(node.data)
        elif kind == stat.S_IFCHR:
            if os.geteuid() != 0:
                continue
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.chown(target, node.uid, node.gid)
        os.chmod(target, stat.S_IMODE(node.mode))
    return root
