"""A second opinion on a disk's format: OpenStack's format inspector must agree.

:mod:`imagefactory.diskformat` reads the headers the project knows. OpenStack's
``oslo_utils.imageutils.format_inspector`` (what Nova and Glance rely on since
CVE-2024-32498) runs every inspector it has over the same bytes at once and
refuses a file more than one format claims (a polyglot: an ISO with a qcow2
header in its system area, a qcow2 that is also a VMDK or carries a VHD
footer), then applies its safety checks (qcow2 backing and data files, unknown
features, VMDK extents, an MBR/GPT partition table that makes sense). Both
must agree with the declared format, or the disk is refused.

The inspector reads through the caller's descriptor when it has one (``pread``,
at most :data:`MAX_READ` bytes), never a path reopened.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: Most bytes read: every inspector decides within the first few hundred KiB.
MAX_READ = 64 * 1024 * 1024
CHUNK = 64 * 1024
#: The inspector names that mean each declared format to qemu ("gpt": a raw
#: disk with an MBR or GPT partition table, checked for sanity).
_AGREES = {"raw": {"raw", "gpt"}, "qcow2": {"qcow2"}}


class _Pread(io.RawIOBase):
    """A read-only stream over ``fd`` with its own offset (``pread``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self.fd, len(view), self.pos)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)


def second_opinion(path: Path, declared: str, fd: int | None = None) -> list[str]:
    """Why the format inspector disagrees with ``declared`` for the disk; ``[]`` if it agrees."""
    own = fd is None
    if fd is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            return [f"cannot open: {exc.strerror}"]
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ["not a regular file"]
        return _inspect(fd, declared)
    finally:
        if own:
            os.close(fd)


def _inspect(fd: int, declared: str) -> list[str]:
    # Imported here: oslo_utils costs a quarter of a second at start-up, which the
    # commands that never inspect a disk (select, a cached gate) need not pay.
    from oslo_utils.imageutils import format_inspector

    wrapper = format_inspector.InspectWrapper(io.BufferedReader(_Pread(fd)))
    try:
        done = 0
        while done < MAX_READ:
            chunk = wrapper.read(CHUNK)
            if not chunk or wrapper.format is not None:
                break
            done += len(chunk)
        wrapper.close()  # end of input: inspectors still waiting for more decide now
        found = wrapper.format
        if found is None:
            return ["the format inspector could not decide the format"]
        name = str(found.NAME)
        if name not in _AGREES.get(declared, {declared}):
            return [f"the format inspector reads it as {name}, declared {declared}"]
        found.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        return [f"the format inspector's safety checks failed: {exc}"]
    except format_inspector.ImageFormatError as exc:
        return [f"the format inspector refuses it: {exc}"]
    except Exception as exc:  # a hostile file may trip the parser itself: refuse, never crash
        return [f"the format inspector failed on it: {type(exc).__name__}: {exc}"]
    finally:
        wrapper.close()
    return []
