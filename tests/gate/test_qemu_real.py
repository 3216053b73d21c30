"""The qemu gate against the real qemu, paused (``-S``): what did qemu open?

Each test binds a command with the gate, starts the real qemu with the
gate's argv and descriptors (plus a QMP socket added by the test, the only
way to know qemu finished opening its disks), then reads ``/proc/PID/fd``:
every regular file qemu holds must be a file the gate verified, and QMP's
``query-block`` must show the disks as ``/dev/fdset/N``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.qemu import parse_qemu
from imagefactory.instances.make import make_overlay
from tests.conftest import require_or_skip
from tests.fakes import diskimages as fx
from tests.gate.conftest import Store

pytestmark = pytest.mark.integration

QEMU = "/usr/bin/qemu-system-x86_64"
BASE = ("-S", "-display", "none", "-accel", "tcg", "-m", "64", "-machine", "pc")


class Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(120)  # a hung qemu fails the test instead of hanging it
        self.sock.connect(str(path))
        self.stream = self.sock.makefile("rwb")
        self.read()  # greeting
        self.call("qmp_capabilities")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()

    def read(self) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(self.stream.readline())
            if "event" not in message:
                return message

    def call(self, command: str) -> Any:
        self.stream.write(json.dumps({"execute": command}).encode() + b"\n")
        self.stream.flush()
        return self.read()["return"]


@contextmanager
def started(argv: list[str], fds: list[int], tmp_path: Path) -> Iterator[tuple[int, Qmp]]:
    qmp_path = tmp_path / "qmp.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(qmp_path))
    srv.listen(1)
    # The test's own monitor: passed as an fd so qemu never opens a path for it either.
    qmp_arg = f"socket,id=qmp0,fd={srv.fileno()},server=on,wait=off"
    full = [*argv, "-chardev", qmp_arg, "-mon", "chardev=qmp0,mode=control"]
    proc = subprocess.Popen(full, pass_fds=[*fds, srv.fileno()], stderr=subprocess.PIPE)
    srv.close()
    qmp: Qmp | None = None
    try:
        qmp = Qmp(qmp_path)
        yield proc.pid, qmp
    finally:
        if qmp is not None:
            qmp.close()
        proc.kill()
        _, err = proc.communicate()
        if proc.returncode not in (0, -9):
            pytest.fail(f"qemu exited {proc.returncode}: {err.decode(errors='replace')}")


def open_files(pid: int) -> list[os.stat_result]:
    """``stat`` of every regular file ``pid`` holds open."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append(st)
    return out


@pytest.fixture(autouse=True)
def _qemu() -> None:
    require_or_skip(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86 missing")


def _disk_files(pid: int, allowed: list[os.stat_result]) -> list[str]:
    """Regular files ``pid`` holds other than ``allowed`` and qemu's own files under /usr."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or target.startswith("/usr/"):
            continue
        if re.search(r"/#[0-9]+ \(deleted\)\Z", target):
            continue  # qemu's own O_TMPFILE (no name ever: nobody could have filled it)
        if not any(os.path.samestat(st, a) for a in allowed):
            out.append(target)
    return out


def test_real_qemu_opens_only_the_verified_disk(images: Store, tmp_path: Path) -> None:
    args = [*BASE, "-drive", f"file={images.good},format=raw,if=virtio,readonly=on"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed, bound.result.render("t")
        good = os.stat(images.good)
        with started(bound.argv, bound.fds, tmp_path) as (pid, qmp):
            blocks = qmp.call("query-block")
            files = [b["inserted"]["file"] for b in blocks if "inserted" in b]
            assert files == ["/dev/fdset/1"]
            assert _disk_files(pid, [good]) == []
            assert any(os.path.samestat(st, good) for st in open_files(pid))


def test_real_qemu_after_a_swap_sees_the_verified_file(images: Store, tmp_path: Path) -> None:
    """After the check the path is swapped for a hostile qcow2: qemu still has the good disk."""
    args = [*BASE, "-drive", f"file={images.good},format=raw,if=virtio,readonly=on"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed
        good = os.stat(images.good)
        images.good.rename(tmp_path / "verified.raw")
        hostile = fx.qcow2(size=1 << 20, backing=str(tmp_path / "evil.raw").encode())
        (tmp_path / "evil.raw").write_bytes(b"E" * 65536)
        images.good.write_bytes(hostile)
        with started(bound.argv, bound.fds, tmp_path) as (pid, _):
            held = open_files(pid)
            assert any(os.path.samestat(st, good) for st in held)
            evil = [os.stat(images.good), os.stat(tmp_path / "evil.raw")]
            assert not any(os.path.samestat(st, e) for st in held for e in evil)


def test_real_qemu_overlay_base_comes_from_the_descriptor(images: Store, tmp_path: Path) -> None:
    """The overlay's header names the base by path; qemu must use the gate's fd instead."""
    overlay = make_overlay(images.good.parent, images.config.run_dir or Path(), "vm")
    args = [*BASE, "-drive", f"file={overlay},format=qcow2,if=virtio"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed, bound.result.render("t")
        allowed = [os.stat(images.good), os.stat(overlay)]
        # Make the header's path name another file: only the descriptor leads to the base.
        images.good.rename(tmp_path / "verified.raw")
        images.good.write_bytes(b"E" * 65536)
        with started(bound.argv, bound.fds, tmp_path) as (pid, qmp):
            block = next(b for b in qmp.call("query-block") if "inserted" in b)
            chain = block["inserted"]["image"]
            # qemu names a node with explicit children by its options, as json:
            spec = json.loads(chain["filename"].removeprefix("json:"))
            assert spec["file"] == {"driver": "file", "filename": "/dev/fdset/1"}
            assert spec["backing"]["file"] == {"driver": "file", "filename": "/dev/fdset/2"}
            assert chain["backing-image"]["filename"] == "/dev/fdset/2"
            assert _disk_files(pid, allowed) == []
            assert not any(os.path.samestat(st, os.stat(images.good)) for st in open_files(pid))


def test_real_qemu_snapshot_mode_keeps_the_store_image_read_only(
    images: Store, tmp_path: Path
) -> None:
    args = [*BASE, "-drive", f"file={images.good},format=raw,if=virtio,snapshot=on"]
    with bind_qemu(parse_qemu([QEMU, *args]), images.config) as bound:
        assert bound.result.allowed, bound.result.render("t")
        with started(bound.argv, bound.fds, tmp_path) as (_, qmp):
            block = next(b for b in qmp.call("query-block") if "inserted" in b)
            assert block["inserted"]["image"]["backing-image"]["filename"] == "/dev/fdset/1"


def test_real_qemu_fuzzed_accepted_commands_hold_only_verified_files(
    images: Store, tmp_path: Path
) -> None:
    """Accepted fuzzed command lines (tests/gate/test_fuzz.py's generator), run for real."""
    import random

    from tests.gate.test_fuzz import _qemu_argv

    rng = random.Random(7)  # noqa: S311 -- a seeded test generator
    good = os.stat(images.good)
    ran = 0
    for _ in range(3000):
        argv = _qemu_argv(rng, str(images.good))
        if "-S" not in argv or "-machine" in argv or "-M" in argv:
            continue  # paused runs only; the machine is BASE's
        argv = [argv[0], *BASE, *argv[1:]]
        with bind_qemu(parse_qemu(argv), images.config) as bound:
            if not bound.result.allowed:
                continue
            srv = socket.socket(socket.AF_UNIX)
            path = tmp_path / f"q{ran}.sock"
            srv.bind(str(path))
            srv.listen(1)
            full = [*bound.argv, "-chardev", f"socket,id=m,fd={srv.fileno()},server=on,wait=off"]
            full += ["-mon", "chardev=m,mode=control"]
            proc = subprocess.Popen(
                full, pass_fds=[*bound.fds, srv.fileno()], stderr=subprocess.DEVNULL
            )
            srv.close()
            try:
                qmp = Qmp(path)
            except (OSError, ValueError):
                proc.wait()
                continue  # qemu refused the combination itself (and exited)
            try:
                assert _disk_files(proc.pid, [good]) == [], argv
                ran += 1
            finally:
                qmp.close()
                proc.kill()
                proc.wait()
        if ran >= 6:
            break
    assert ran >= 3
