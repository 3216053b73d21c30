"""Bind check to use: the gate opens each disk once, verifies through that descriptor,
and hands the descriptor to qemu (``-add-fd`` + ``file=/dev/fdset/N``).

Nothing is opened twice by name: the format check, the digests and the
inspection read the descriptor (:attr:`VerifyOptions.disk_fd`), the verified
cache is keyed on the descriptor's ``fstat``, and qemu receives a duplicate of
the same open file. A path swapped, a symlink planted or a file rewritten in
place after the gate opened it changes nothing qemu sees (a rewrite in place
by root is outside any gate's reach).

A store image is opened read-only (a ``-drive`` without ``readonly=on`` or
``snapshot=on`` on it is refused: qemu could not write through the descriptor
anyway); a qcow2 overlay over a store image is opened read-write, its base
read-only, and qemu is told the base explicitly (``backing.file.filename=`` of
the base's fdset), never left to follow the overlay's header by name.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imagefactory.diskformat import UnsafeImageError, detect
from imagefactory.gate.check import GateConfig, GateResult
from imagefactory.gate.dirs import untrusted_dir
from imagefactory.gate.disks import (
    DiskRequest,
    Refused,
    absolute_backing,
    inside,
    labels_disk,
    signed_base_format,
)
from imagefactory.gate.overlay import check_overlay
from imagefactory.gate.qemu import PREFIX, Drive, QemuCommand
from imagefactory.gate.retired import retired_problem
from imagefactory.gate.text import shown
from imagefactory.verify.cache import verify_cached
from imagefactory.verify.pipeline import verify_image
from imagefactory.verify.verdict import Verdict

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


@dataclass
class Opened:
    """One file the gate holds open for qemu."""

    fd: int
    path: Path
    #: The fdset qemu knows it by.
    fdset: int
    writable: bool

    def add_fd(self) -> list[str]:
        mode = "rdwr" if self.writable else "rdonly"
        return ["-add-fd", f"fd={self.fd},set={self.fdset},opaque={mode}"]


@dataclass
class Bound:
    """The rewritten command: argv for qemu and the descriptors it must inherit."""

    argv: list[str]
    fds: list[int]
    result: GateResult


@dataclass
class _Binder:
    config: GateConfig
    result: GateResult = field(default_factory=GateResult)
    opened: list[Opened] = field(default_factory=list)
    #: fdsets handed out so far.
    sets: int = 0

    def open(self, path: Path, name: str, *, writable: bool) -> Opened:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | _FLAGS
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise Refused("gate-unverifiable-disk", f"{name}: cannot open: {exc.strerror}") from exc
        self.sets += 1
        opened = Opened(fd, path, self.sets, writable)
        self.opened.append(opened)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("gate-unverifiable-disk", f"{name}: not a regular file")
        if writable:
            # qemu opens an image read-only first and takes from the set only a
            # descriptor of the access mode it asks for: add a read-only one of the
            # same open file (through /proc, never the name again).
            again = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            self.opened.append(Opened(again, path, self.sets, writable=False))
            if not os.path.samestat(os.fstat(again), st):
                raise Refused("gate-unverifiable-disk", f"{name}: changed while being opened")
        return opened

    def verify(self, image_dir: Path, opened: Opened) -> Verdict:
        options = dataclasses.replace(self.config.options, disk_fd=opened.fd)
        if self.config.cache is not None:
            verdict = verify_cached(image_dir, self.config.policy, self.config.cache, options)
        else:
            verdict = verify_image(image_dir, self.config.policy, options)
        # One verdict per disk opened (not per directory): each descriptor was checked.
        self.result.verdicts[Path(f"{image_dir}#{opened.fdset}")] = verdict
        return verdict

    def trusted_store_dir(self, directory: Path, name: str) -> None:
        problem = untrusted_dir(directory, self.config.store)
        if problem is not None:
            raise Refused("gate-untrusted-dir", f"{name}: {problem}")

    def not_retired(self, image_dir: Path, overlay: Path | None, name: str) -> None:
        problem = retired_problem(image_dir, self.config.store, overlay)
        if problem is not None:
            raise Refused("gate-retired", f"{name}: {problem}")

    def bind(self, drive: Drive) -> str:
        """The ``-drive`` argument naming descriptors instead of paths."""
        request = drive.request()
        store = Path(os.path.realpath(self.config.store))
        name = f"{request.where} ({shown(request.path)})"
        real = Path(os.path.realpath(request.path))
        own = labels_disk(real.parent)
        if own is not None and own[0] == real.name:
            return self._bind_image(drive, request, real, signed=own[1], store=store, name=name)
        return self._bind_overlay(drive, request, real, store, name)

    def _bind_image(
        self, drive: Drive, request: DiskRequest, real: Path, *, signed: str, store: Path, name: str
    ) -> str:
        if not inside(real, store):
            raise Refused("gate-outside-store", f"{name}: outside the image store {store}")
        self.trusted_store_dir(real.parent, name)
        if request.format != signed:
            raise Refused(
                "gate-format-mismatch", f"{name}: opened as {request.format}, signed as {signed}"
            )
        if not (drive.readonly or drive.options.get("snapshot") == "on"):
            raise Refused(
                "gate-refused-option",
                f"{name}: a store image is read-only; add readonly=on or snapshot=on, or boot"
                " an overlay made by imagefactory",
            )
        self.not_retired(real.parent, None, name)
        opened = self.open(real, name, writable=False)
        self.verify(real.parent, opened)
        return drive.argument(f"/dev/fdset/{opened.fdset}")

    def _bind_overlay(
        self, drive: Drive, request: DiskRequest, real: Path, store: Path, name: str
    ) -> str:
        if request.format != "qcow2":
            raise Refused(
                "gate-unverifiable-disk",
                f"{name}: neither a store image (no labels.json names it) nor a qcow2 overlay",
            )
        overlay = self.open(real, name, writable=not drive.readonly)
        try:
            info = detect(real, fd=overlay.fd)
        except UnsafeImageError as exc:
            raise Refused("gate-unverifiable-disk", f"{name}: {exc.render()}") from exc
        if info.format != "qcow2" or info.backing_file is None:
            raise Refused(
                "gate-unverifiable-disk",
                f"{name}: neither a store image (no labels.json names it) nor a qcow2 overlay",
            )
        backing = absolute_backing(name, info)
        base = Path(os.path.realpath(backing))
        if not inside(base, store):
            raise Refused(
                "gate-outside-store",
                f"{name}: the overlay's base {shown(backing)} is outside the image store {store}",
            )
        self.trusted_store_dir(base.parent, name)
        base_format = signed_base_format(name, base, info)
        why = check_overlay(real, overlay.fd, base, base_format, self.config.run_dir)
        if why is not None:
            raise Refused("gate-overlay", f"{name}: {why}")
        self.not_retired(base.parent, real, name)
        base_fd = self.open(base, name, writable=False)
        self.verify(base.parent, base_fd)
        return drive.argument(
            f"/dev/fdset/{overlay.fdset}",
            {
                "backing.driver": base_format,
                "backing.file.driver": "file",
                "backing.file.filename": f"/dev/fdset/{base_fd.fdset}",
            },
        )


def _close(opened: list[Opened]) -> None:
    for item in opened:
        os.close(item.fd)


@contextmanager
def bind_qemu(command: QemuCommand, config: GateConfig) -> Iterator[Bound]:
    """Open and verify every disk of ``command``; the argv to exec and the fds to pass.

    The descriptors stay open inside the ``with`` block (the caller execs qemu
    there) and are closed when it ends without an exec.
    """
    binder = _Binder(config)
    binder.result.refusals += command.refusals
    args: list[str] = []
    try:
        for arg in command.args:
            if not isinstance(arg, Drive):
                args.append(arg)
            elif arg.path is None:
                args.append(arg.argument(None))
            else:
                try:
                    args.append(binder.bind(arg))
                except Refused as exc:
                    binder.result.refusals.append(exc.reason)
        add_fds = [word for item in binder.opened for word in item.add_fd()]
        argv = [command.program, *PREFIX, *add_fds, *args]
        yield Bound(argv, [item.fd for item in binder.opened], binder.result)
    finally:
        _close(binder.opened)
