"""The OS tree on the host as the guest sees it: every path stays inside the tree.

A guest symlink (``/etc/passwd -> /host/path``, ``../../..``) must never make
the hardening read, write, chmod or remove anything on the build host. Each
test keeps a "host" directory beside the tree and checks it is byte-for-byte
and mode-for-mode unchanged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imagefactory.audit import run_audit
from imagefactory.errors import TreeError
from imagefactory.guest.tree import HostTree
from imagefactory.harden.apply import apply_profile
from imagefactory.profiles import load_profile
from imagefactory.vocab import RootPolicy
from tests.fakes.guest import materialize, unhardened_tree

PROFILE = load_profile("worker-node-default")


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under ``root`` with its mode and content (symlink: its target)."""
    seen: dict[str, tuple[int, bytes | str]] = {str(root): (root.lstat().st_mode, b"")}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            seen[str(path)] = (st.st_mode, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            seen[str(path)] = (st.st_mode, path.read_bytes())
        else:
            seen[str(path)] = (st.st_mode, b"")
    return seen


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """What stands for the build host: files a leaking tree operation would change."""
    root = tmp_path / "host"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("host-root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "shadow").write_text("host-root:$6$secret:19000::::::\n")
    (root / "etc" / "ssh" / "sshd_config").write_text("PermitRootLogin yes\n")
    (root / "log").mkdir()
    (root / "log" / "host.log").write_text("host log\n")
    (root / "sudoers.d").mkdir()
    (root / "sudoers.d" / "admins").write_text("admin ALL=(ALL) ALL\n")
    (root / "machine-id").write_text("host machine id\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF")
    os.chmod(root / "bin" / "tool", 0o4755)
    return root


def _up(tree: Path, target: Path) -> str:
    """A relative symlink target that climbs far above ``tree`` and down to ``target``."""
    return "../" * (len(tree.parts) + 3) + str(target).lstrip("/")


def test_absolute_and_climbing_symlinks_resolve_inside_the_tree(tmp_path: Path, host: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "passwd").symlink_to(host / "etc" / "passwd")  # absolute, to the host
    (tree / "etc" / "shadow").symlink_to(_up(tree, host / "etc" / "shadow"))  # ../../..
    (tree / "etc" / "ssh").symlink_to(host / "etc" / "ssh")  # a directory on the host
    (tree / "etc" / "hostname").write_text("wn\n")
    # The same absolute path inside the tree: where the guest's own symlink leads.
    inside = tree / str(host / "etc").lstrip("/")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("guest-root:x:0:0::/root:/bin/sh\n")
    before = _snapshot(host)
    with HostTree(tree) as t:
        assert t.read("/etc/passwd") == b"guest-root:x:0:0::/root:/bin/sh\n"
        assert t.read("/etc/shadow") is None  # climbs to the tree's root, not the host's
        assert t.read("/etc/ssh/sshd_config") is None
        assert t.listdir("/etc/ssh") == []  # a symlink is not listed through
        t.write("/etc/passwd", b"hardened\n", 0o644)
        t.chmod("/etc/passwd", 0o600)
        with pytest.raises(TreeError, match="symlink to nothing inside the tree"):
            t.write("/etc/shadow", b"x\n", 0o640)
        with pytest.raises(TreeError, match=r"cannot write /etc/ssh/sshd_config"):
            t.write("/etc/ssh/sshd_config", b"PermitRootLogin no\n")
        with pytest.raises(TreeError, match=r"cannot chmod /etc/shadow"):
            t.chmod("/etc/shadow", 0o777)
        with pytest.raises(TreeError, match=r"cannot truncate /etc/ssh/sshd_config"):
            t.truncate("/etc/ssh/sshd_config")
        with pytest.raises(TreeError, match=r"cannot create /etc/ssh"):
            t.mkdir("/etc/ssh/sshd_config.d")
        t.remove("/etc/ssh")  # the symlink goes, not the host directory behind it
        assert [e.path for e in t.walk("/etc")] == [
            "/etc/hostname",
            "/etc/passwd",
            "/etc/shadow",
        ]
    assert _snapshot(host) == before
    assert (inside / "passwd").read_bytes() == b"hardened\n"
    assert stat.S_IMODE((inside / "passwd").stat().st_mode) == 0o600
    assert not (tree / "etc" / "ssh").is_symlink()


def test_a_symlinked_directory_on_the_way_stays_inside_the_tree(tmp_path: Path, host: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "var").mkdir(parents=True)
    (tree / "var" / "log").symlink_to(_up(tree, host / "log"))
    (tree / "srv").symlink_to("/")  # the tree's own root, not the host's
    (tree / "etc").mkdir()
    (tree / "etc" / "motd").write_text("hello\n")
    before = _snapshot(host)
    with HostTree(tree) as t:
        assert t.walk("/var/log") == []  # not followed, as find(1) in the guest
        assert t.lstat("/var/log/host.log") is None
        assert t.read("/srv/etc/motd") == b"hello\n"
        assert t.read(f"/srv/{str(host).lstrip('/')}/etc/passwd") is None
        t.write("/srv/etc/motd", b"bye\n")
        with pytest.raises(TreeError):
            t.write("/var/log/host.log", b"")
        walked = {e.path for e in t.walk("/")}
    assert walked == {"/var", "/var/log", "/srv", "/etc", "/etc/motd"}
    assert (tree / "etc" / "motd").read_text() == "bye\n"
    assert _snapshot(host) == before


def test_the_hardening_of_a_hostile_tree_never_touches_the_host(tmp_path: Path, host: Path) -> None:
    tree = materialize(unhardened_tree(), tmp_path / "tree")
    # Replace what the hardening edits, removes, truncates and walks with ways out.
    for name, target in (
        ("etc/shadow", host / "etc" / "shadow"),
        ("etc/passwd", host / "etc" / "passwd"),
        ("etc/machine-id", host / "machine-id"),
    ):
        (tree / name).unlink()
        (tree / name).symlink_to(target)
    for name, target in (("var/log", host / "log"), ("etc/sudoers.d", host / "sudoers.d")):
        for child in (tree / name).rglob("*"):
            if child.is_file():
                child.unlink()
        for child in sorted((tree / name).rglob("*"), reverse=True):
            child.rmdir()
        (tree / name).rmdir()
        (tree / name).symlink_to(_up(tree, target))
    (tree / "root" / ".bash_history").unlink()
    (tree / "root" / ".bash_history").symlink_to(host / "etc" / "passwd")
    (tree / "usr" / "bin" / "tool").symlink_to(host / "bin" / "tool")
    before = _snapshot(host)
    with HostTree(tree) as t, pytest.raises(TreeError, match="/etc/machine-id"):
        # Sealing writes /etc/machine-id: a symlink to nothing in the tree is refused.
        apply_profile(t, PROFILE, RootPolicy.NONE)
    assert _snapshot(host) == before
    assert not (tree / "root" / ".bash_history").is_symlink()  # the link itself was sealed
    (tree / "etc" / "machine-id").unlink()
    with HostTree(tree) as t:
        actions = apply_profile(t, PROFILE, RootPolicy.NONE)
    assert _snapshot(host) == before
    assert "seal: cleared /etc/machine-id" in actions
    assert (tree / "etc" / "machine-id").read_bytes() == b""


def test_a_tree_hardened_the_same_way_as_the_guest_passes_the_same_audit(tmp_path: Path) -> None:
    guest = unhardened_tree()
    tree = materialize(guest, tmp_path / "tree")
    with HostTree(tree) as t:
        on_tree = apply_profile(t, PROFILE, RootPolicy.NONE)
        tree_report = run_audit(t, PROFILE, RootPolicy.NONE)
    assert on_tree == apply_profile(guest, PROFILE, RootPolicy.NONE)
    guest_report = run_audit(guest, PROFILE, RootPolicy.NONE)
    assert tree_report.passed
    assert guest_report.passed
    statuses = {c.id: c.status for c in tree_report.results}
    assert statuses == {c.id: c.status for c in guest_report.results}


def test_a_tree_hardened_wrongly_fails_the_audit(tmp_path: Path) -> None:
    tree = materialize(unhardened_tree(), tmp_path / "tree")
    with HostTree(tree) as t:
        apply_profile(t, PROFILE, RootPolicy.NONE)
        # What a broken hardening would leave: a machine id, a setuid helper.
        t.write("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n", 0o444)
        t.chmod("/usr/lib/polkit-1/polkit-agent-helper-1", 0o4755)
        report = run_audit(t, PROFILE, RootPolicy.NONE)
    assert not report.passed
    assert {"seal.machine-id", "fs.setuid-allowlist"} <= {c.id for c in report.failed}


def test_fifos_and_device_nodes_are_never_opened_for_io(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    os.mkfifo(tree / "etc" / "fifo.conf")  # a naive reader blocks here for ever
    (tree / "etc" / "null").symlink_to("/etc/fifo.conf")
    with HostTree(tree) as t:
        assert t.read("/etc/fifo.conf") is None
        assert t.read("/etc/null") is None
        with pytest.raises(TreeError, match="not a regular file"):
            t.write("/etc/null", b"x")
        with pytest.raises(TreeError, match="not a regular file"):
            t.truncate("/etc/fifo.conf")
        fifo = t.lstat("/etc/fifo.conf")
    assert fifo is not None
    assert stat.S_ISFIFO(fifo.mode)


@pytest.mark.parametrize(
    "path", ["etc/passwd", "/etc/../etc/passwd", "/etc/./passwd", "/etc//passwd", "/etc/\0"]
)
def test_paths_that_are_not_plain_are_refused_naming_them(tmp_path: Path, path: str) -> None:
    (tmp_path / "etc").mkdir()
    with HostTree(tmp_path) as t, pytest.raises(TreeError, match="refusing the guest path"):
        t.write(path, b"x")


def test_a_name_that_is_not_utf8_stops_the_walk(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.close(os.open(os.fsencode(tmp_path / "etc") + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    with HostTree(tmp_path) as t, pytest.raises(TreeError, match="not UTF-8"):
        t.walk("/")


def test_the_root_itself_cannot_be_removed(tmp_path: Path) -> None:
    with HostTree(tmp_path) as t, pytest.raises(TreeError, match="root itself"):
        t.remove("/")
    assert tmp_path.is_dir()


def test_mkdir_makes_parents_and_sets_the_mode_asked(tmp_path: Path) -> None:
    with HostTree(tmp_path) as t:
        t.mkdir("/etc/ssh/sshd_config.d", 0o700)
        t.mkdir("/scratch", 0o1777)
    assert stat.S_IMODE((tmp_path / "etc" / "ssh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "etc" / "ssh" / "sshd_config.d").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "scratch").stat().st_mode) == 0o1777


def test_copy_out_copies_a_regular_file_and_follows_no_symlink_on_the_way(
    tmp_path: Path,
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("HOST SECRET")
    tree = tmp_path / "tree"
    (tree / "boot" / "efi").mkdir(parents=True)
    (tree / "boot" / "efi" / "loader.efi").write_bytes(b"MZ loader")
    (tree / "boot" / "efi" / "abs").symlink_to(host / "secret")
    (tree / "boot" / "efi" / "rel").symlink_to("loader.efi")  # even one inside the tree
    (tree / "boot" / "linked").symlink_to("efi")
    out = tmp_path / "out"
    out.mkdir()
    with HostTree(tree) as t:
        t.copy_out("/boot/efi/loader.efi", out / "loader.efi")
        assert (out / "loader.efi").read_bytes() == b"MZ loader"
        for path in ("/boot/efi/abs", "/boot/efi/rel", "/boot/linked/loader.efi", "/boot/efi"):
            with pytest.raises(TreeError, match="cannot copy"):
                t.copy_out(path, out / "copy")
    assert not (out / "copy").exists()
