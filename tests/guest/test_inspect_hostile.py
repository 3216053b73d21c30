"""`inspect` on untrusted images: format tricks are refused before libguestfs sees
the file; a safe image is opened read-only, network off, its format stated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

from imagefactory import inspection as inspect_mod
from imagefactory.cli import main
from imagefactory.diskformat import UnsafeImageError
from imagefactory.guest import handle
from imagefactory.host import accel
from imagefactory.profiles import load_profile
from tests.fakes import diskimages as fx
from tests.fakes.guest import unhardened_tree

PROFILE = load_profile("worker-node-default")


def _no_accel() -> str:
    raise AssertionError("a refused image must not get as far as choosing an accelerator")


@pytest.fixture
def no_libguestfs(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("libguestfs must not see a refused image")

    monkeypatch.setattr(inspect_mod, "open_guest", refuse)
    monkeypatch.setattr(handle, "_guestfs", refuse)


def _hostile(tmp_path: Path, kind: str) -> tuple[Path, str | None]:
    if kind == "qcow2-backing-shadow":
        return fx.write(tmp_path / "a.qcow2", fx.qcow2(backing=b"/etc/shadow")), None
    if kind == "qcow2-backing-url":
        return fx.write(tmp_path / "a.qcow2", fx.qcow2(backing=b"http://127.0.0.1/x")), None
    if kind == "raw-with-qcow2-header":
        return fx.write(tmp_path / "a.raw", fx.qcow2()), "raw"
    if kind == "qcow2-unknown-incompatible-bit":
        return fx.write(tmp_path / "a.qcow2", fx.qcow2(incompatible=1 << 40)), None
    if kind == "vmdk-extent-path":
        desc = fx.vmdk_descriptor(["/dev/sda"])
        return fx.write(tmp_path / "a.vmdk", desc), None
    if kind == "qed":
        return fx.write(tmp_path / "a.qed", fx.qed()), None
    if kind == "vdi":
        return fx.write(tmp_path / "a.vdi", fx.vdi()), None
    if kind == "huge-virtual-size":
        return fx.write(tmp_path / "a.qcow2", fx.qcow2(size=1 << 50)), None
    if kind == "empty":
        return fx.write(tmp_path / "a.raw", b""), None
    if kind == "symlink":
        link = tmp_path / "a.raw"
        link.symlink_to("/etc/shadow")
        return link, None
    if kind == "fifo":
        path = tmp_path / "a.raw"
        os.mkfifo(path)
        return path, None
    raise AssertionError(kind)


HOSTILE = [
    "qcow2-backing-shadow",
    "qcow2-backing-url",
    "raw-with-qcow2-header",
    "qcow2-unknown-incompatible-bit",
    "vmdk-extent-path",
    "qed",
    "vdi",
    "huge-virtual-size",
    "empty",
    "symlink",
    "fifo",
]


@pytest.mark.usefixtures("no_libguestfs")
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_image_is_refused_before_libguestfs(tmp_path: Path, kind: str) -> None:
    path, declared = _hostile(tmp_path, kind)
    with pytest.raises(UnsafeImageError) as exc:
        inspect_mod.inspect_image(path, PROFILE, declared_format=declared, accel=_no_accel)
    assert exc.value.codes


@pytest.mark.usefixtures("no_libguestfs")
def test_cli_inspect_refusal_is_a_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _hostile(tmp_path, "qcow2-backing-shadow")
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "refusing disk image" in err
    assert "backing" in err


class _FakeGuestFS:
    """Records the calls `open_guest` makes; serves the fake tree's facts."""

    calls: ClassVar[list[tuple[str, Any]]] = []

    def __init__(self, python_return_dict: bool) -> None:
        self.calls.clear()

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, (args, kwargs)))
            return {
                "list_partitions": ["/dev/sda1"],
                "vfs_type": "ext4",
                "is_file": True,
                "pread": b"UUID=x / ext4 defaults 0 1\n",
            }.get(name)

        return record


def _open_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Path:
    """open_guest on a fake qcow2 through the recording GuestFS; the image."""
    image = fx.write(tmp_path / "disk.qcow2", fx.qcow2())

    class Module:
        GuestFS = _FakeGuestFS

    monkeypatch.setattr(handle, "_guestfs", lambda: Module)
    with handle.open_guest(image, "qcow2", readonly=True, accel="tcg", **options) as guest:
        assert guest.readonly
    return image


def test_safe_image_is_opened_read_only_with_explicit_format_and_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _open_fake(tmp_path, monkeypatch)
    names = [name for name, _ in _FakeGuestFS.calls]
    assert names[:5] == [
        "set_backend",
        "set_backend_settings",
        "set_network",
        "add_drive_opts",
        "launch",
    ]
    assert ("set_network", ((False,), {})) in _FakeGuestFS.calls
    assert ("set_backend_settings", ((["force_tcg"],), {})) in _FakeGuestFS.calls
    assert (
        "add_drive_opts",
        ((str(image),), {"format": "qcow2", "readonly": 1}),
    ) in _FakeGuestFS.calls
    assert ("mount_ro", (("/dev/sda1", "/"), {})) in _FakeGuestFS.calls
    assert "mount" not in names
    assert "set_smp" not in names  # one vCPU unless asked
    assert "inspect_os" not in names  # one Linux file system: no full inspection needed
    assert "close" in names


def test_the_appliance_gets_the_vcpus_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_fake(tmp_path, monkeypatch, smp=2)
    names = [name for name, _ in _FakeGuestFS.calls]
    assert ("set_smp", ((2,), {})) in _FakeGuestFS.calls
    assert names.index("set_smp") < names.index("launch")


def test_a_fixed_appliance_is_booted_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _open_fake(tmp_path, monkeypatch, appliance=tmp_path / "fixed")
    names = [name for name, _ in _FakeGuestFS.calls]
    assert ("set_path", ((str(tmp_path / "fixed"),), {})) in _FakeGuestFS.calls
    assert names.index("set_path") < names.index("launch")
    _open_fake(tmp_path, monkeypatch)
    assert "set_path" not in [name for name, _ in _FakeGuestFS.calls]  # libguestfs's own


def test_kvm_host_does_not_force_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = fx.write(tmp_path / "disk.qcow2", fx.qcow2())

    class Module:
        GuestFS = _FakeGuestFS

    monkeypatch.setattr(handle, "_guestfs", lambda: Module)
    monkeypatch.setattr(accel, "kvm_works", lambda qemu, cache: True)
    chosen = accel.choose_guest_accel("auto", tmp_path / "accel.json")
    with handle.open_guest(image, "qcow2", accel=chosen):
        pass
    assert "set_backend_settings" not in [name for name, _ in _FakeGuestFS.calls]


def test_open_guest_refuses_formats_it_was_not_given_checked(tmp_path: Path) -> None:
    from imagefactory.errors import GuestError

    with pytest.raises(GuestError), handle.open_guest(tmp_path / "x.vmdk", "vmdk", accel="tcg"):
        pass


def test_inspect_reports_facts_and_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    image = fx.write(tmp_path / "disk.qcow2", fx.qcow2())
    tree = unhardened_tree()

    @contextlib.contextmanager
    def fake_open(path: Path, fmt: str, **kwargs: Any) -> Any:
        assert (path, fmt, kwargs["readonly"]) == (image, "qcow2", True)
        yield tree

    monkeypatch.setattr(inspect_mod, "open_guest", fake_open)
    monkeypatch.setattr(inspect_mod, "boot_mode", lambda guest: "bios")
    result = inspect_mod.inspect_image(image, PROFILE, accel=lambda: "tcg")
    data = result.to_dict()
    assert data["os"]["distro"] == "debian"
    assert data["disk"]["format"] == "qcow2"
    assert data["packages"]["count"] == 2
    assert not result.audit.passed


class _StubG:
    """A handle whose guest has a name libguestfs cannot pass back (not UTF-8)."""

    def find0(self, top: str, out: str) -> None:
        Path(out).write_bytes(b"ok\0bad\xff\0")

    def lstatnslist(self, parent: str, names: list[str]) -> list[dict[str, int]]:
        "\udcff".join(names).encode()  # what the binding does: raises UnicodeEncodeError
        raise AssertionError("unreachable")

    def lstatns(self, path: str) -> dict[str, int]:
        path.encode()
        return {"st_mode": 0o100644, "st_uid": 0, "st_gid": 0, "st_size": 0}

    def is_dir(self, path: str, followsymlinks: bool) -> bool:
        return True

    def ls(self, path: str) -> list[str]:
        b"bad\xff".decode()
        raise AssertionError("unreachable")


def _stub_guest() -> handle.Guest:
    return handle.Guest(
        g=_StubG(), readonly=True, root="/dev/sda1", mountpoints={}, accel="tcg", launch_seconds=0
    )


def test_a_name_that_cannot_be_examined_stops_the_audit() -> None:
    from imagefactory.errors import GuestError

    with pytest.raises(GuestError, match="refusing to audit around it"):
        _stub_guest().walk("/")
    with pytest.raises(GuestError, match="not UTF-8"):
        _stub_guest().listdir("/etc")


def test_several_file_systems_fall_back_to_full_inspection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = fx.write(tmp_path / "disk.qcow2", fx.qcow2())

    class MultiFS(_FakeGuestFS):
        def __getattr__(self, name: str) -> Any:
            answers: dict[str, Any] = {
                "list_partitions": ["/dev/sda1", "/dev/sda2"],
                "vfs_type": "ext4",
                "inspect_os": ["/dev/sda2"],
                "inspect_get_mountpoints": {"/": "/dev/sda2", "/boot": "/dev/sda1"},
            }

            def record(*args: Any, **kwargs: Any) -> Any:
                self.calls.append((name, (args, kwargs)))
                return answers.get(name)

            return record

    class Module:
        GuestFS = MultiFS

    monkeypatch.setattr(handle, "_guestfs", lambda: Module)
    with handle.open_guest(image, "qcow2", accel="tcg") as guest:
        assert guest.mountpoints == {"/": "/dev/sda2", "/boot": "/dev/sda1"}
    mounts = [args for name, args in MultiFS.calls if name == "mount_ro"]
    assert mounts == [(("/dev/sda2", "/"), {}), (("/dev/sda1", "/boot"), {})]


def _calls_of_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readonly: bool) -> list[str]:
    """The libguestfs calls open_guest makes on a fake handle, in order."""
    image = fx.write(tmp_path / "disk.qcow2", fx.qcow2())

    class Module:
        GuestFS = _FakeGuestFS

    monkeypatch.setattr(handle, "_guestfs", lambda: Module)
    with handle.open_guest(image, "qcow2", readonly=readonly, accel="tcg"):
        return [name for name, _ in _FakeGuestFS.calls]


def test_read_only_handle_keeps_the_single_root_mounted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _calls_of_open(tmp_path, monkeypatch, readonly=True)
    assert names.count("mount_ro") == 1
    assert "umount_all" not in names
    assert "mount" not in names


def test_writable_handle_remounts_the_examined_root_read_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _calls_of_open(tmp_path, monkeypatch, readonly=False)
    # Examined read-only, unmounted, then mounted read-write for the hardening.
    assert names.index("mount_ro") < names.index("umount_all") < names.index("mount")
    assert ("mount", (("/dev/sda1", "/"), {})) in _FakeGuestFS.calls


class _TreeG:
    """A handle over a small fixed tree (``/var/log`` real, ``/srv/logs`` a symlink)."""

    DIR, FILE, LINK = 0o040755, 0o100644, 0o120777
    TREE: ClassVar[dict[str, int]] = {
        "/etc": DIR,
        "/etc/passwd": FILE,
        "/srv": DIR,
        "/srv/logs": LINK,
        "/var": DIR,
        "/var/log": DIR,
        "/var/log/apt": DIR,
        "/var/log/apt/history.log": FILE,
        "/var/log/syslog": FILE,
        "/var/logx": FILE,
    }

    def __init__(self) -> None:
        self.finds: list[str] = []
        self.calls: list[str] = []

    def _st(self, path: str) -> dict[str, int]:
        if path not in self.TREE:
            raise RuntimeError(f"{path}: No such file or directory")
        return {"st_mode": self.TREE[path], "st_uid": 0, "st_gid": 0, "st_size": 1,
                "st_mtime_sec": 0, "st_ino": 1, "st_nlink": 1}  # fmt: skip

    def lstatns(self, path: str) -> dict[str, int]:
        self.calls.append("lstatns")
        return self._st(path)

    def statns(self, path: str) -> dict[str, int]:
        self.calls.append("statns")
        return self._st(path.replace("/srv/logs", "/var/log", 1))

    def pread(self, path: str, size: int, offset: int) -> bytes:
        self.calls.append("pread")
        return b"x"[:size]

    def is_dir(self, path: str, followsymlinks: bool) -> bool:
        self.calls.append("is_dir")
        return self.TREE.get(path) == self.DIR

    def ls(self, path: str) -> list[str]:
        self.calls.append("ls")
        base = path.rstrip("/") + "/"
        names = [p[len(base) :] for p in self.TREE if p.startswith(base)]
        return [n for n in names if "/" not in n]

    def find0(self, top: str, out: str) -> None:
        self.finds.append(top)
        base = top.rstrip("/") + "/"
        names = [p[len(base) :] for p in self.TREE if p.startswith(base)]
        Path(out).write_bytes(b"".join(n.encode() + b"\0" for n in names))

    def lstatnslist(self, parent: str, names: list[str]) -> list[dict[str, int]]:
        prefix = parent.rstrip("/")
        return [
            {"st_mode": self.TREE[f"{prefix}/{n}"], "st_uid": 0, "st_gid": 0, "st_size": 1,
             "st_mtime_sec": 0, "st_ino": 1, "st_nlink": 1}
            for n in names
        ]  # fmt: skip


def _tree_guest(readonly: bool) -> tuple[handle.Guest, _TreeG]:
    g = _TreeG()
    guest = handle.Guest(
        g=g, readonly=readonly, root="/dev/sda1", mountpoints={}, accel="tcg", launch_seconds=0
    )
    return guest, g


def test_read_only_walk_below_root_is_cut_from_the_root_walk() -> None:
    fresh, _ = _tree_guest(readonly=True)
    expected = list(fresh.walk("/var/log"))
    assert [e.path for e in expected] == [
        "/var/log/apt",
        "/var/log/apt/history.log",
        "/var/log/syslog",
    ]
    guest, g = _tree_guest(readonly=True)
    guest.walk("/")
    assert list(guest.walk("/var/log")) == expected
    assert list(guest.walk("/var/log/")) == expected
    assert g.finds == ["/"]  # no second listing
    # A symlink on the way (or a missing directory) is listed afresh, as before.
    guest.walk("/srv/logs")
    guest.walk("/nonexistent")
    assert g.finds == ["/", "/srv/logs", "/nonexistent"]


def test_writable_walk_below_root_is_listed_afresh() -> None:
    guest, g = _tree_guest(readonly=False)
    guest.walk("/")
    guest.walk("/var/log")
    assert g.finds == ["/", "/var/log"]


LOOKUPS = [
    "/etc", "/etc/passwd", "/etc/passwd/x", "/etc/shadow", "/nope/x", "/var/log",
    "/var/log/syslog", "/var/log/apt", "/srv/logs", "/srv/logs/syslog", "/var//log",
]  # fmt: skip


def test_read_only_lookups_after_the_walk_match_the_appliance_without_asking_it() -> None:
    fresh, _ = _tree_guest(readonly=True)
    want = [(fresh.lstat(p), fresh.read(p), fresh.listdir(p)) for p in LOOKUPS]
    guest, g = _tree_guest(readonly=True)
    guest.walk("/")
    got = [(guest.lstat(p), guest.read(p), guest.listdir(p)) for p in LOOKUPS]
    assert got == want
    # Reading a regular file still needs its bytes; only what goes through the
    # symlink (reading /srv/logs, anything under it) or is not a plain path
    # (/var//log) is looked up in the appliance.
    assert g.calls.count("pread") == 3  # /etc/passwd, /var/log/syslog, /srv/logs/syslog
    assert [c for c in g.calls if c != "pread"] == [
        "statns",  # read /srv/logs
        "lstatns", "statns", "is_dir",  # /srv/logs/syslog
        "lstatns", "statns", "is_dir",  # /var//log
    ]  # fmt: skip


def test_writable_lookups_always_ask_the_appliance() -> None:
    guest, g = _tree_guest(readonly=False)
    guest.walk("/")
    guest.lstat("/etc/passwd")
    assert g.calls == ["lstatns"]


class _VanishingG(_TreeG):
    """lstatnslist marks one entry unstatable (st_ino -1), as libguestfs does."""

    def __init__(self, second_try_fails: bool) -> None:
        super().__init__()
        self.second_try_fails = second_try_fails

    def lstatnslist(self, parent: str, names: list[str]) -> list[dict[str, int]]:
        stats = super().lstatnslist(parent, names)
        return [
            {**st, "st_ino": -1} if f"{parent.rstrip('/')}/{n}" == "/var/log/syslog" else st
            for n, st in zip(names, stats, strict=True)
        ]

    def lstatns(self, path: str) -> dict[str, int]:
        if self.second_try_fails:
            raise RuntimeError(f"lstatns: {path}: No such file or directory")
        return {"st_mode": self.TREE[path], "st_uid": 0, "st_gid": 0, "st_size": 1,
                "st_mtime_sec": 0, "st_ino": 7, "st_nlink": 1}  # fmt: skip


def test_an_entry_that_cannot_be_examined_stops_the_walk() -> None:
    guest = handle.Guest(
        g=_VanishingG(second_try_fails=True), readonly=True, root="/dev/sda1",
        mountpoints={}, accel="tcg", launch_seconds=0,
    )  # fmt: skip
    from imagefactory.errors import GuestError

    with pytest.raises(GuestError, match="cannot examine /var/log/syslog"):
        list(guest.walk("/"))


def test_an_entry_missed_by_the_batch_is_examined_on_its_own() -> None:
    guest = handle.Guest(
        g=_VanishingG(second_try_fails=False), readonly=True, root="/dev/sda1",
        mountpoints={}, accel="tcg", launch_seconds=0,
    )  # fmt: skip
    assert "/var/log/syslog" in [e.path for e in guest.walk("/")]
