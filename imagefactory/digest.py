"""Streamed file digests, fast enough for multi-GB disks.

One read of the file feeds every requested algorithm. The file is read with
``preadv`` into preallocated buffers (no allocation, no page faults of fresh
memory per chunk), so a single sha256 goes at the speed of hashlib's sha256
itself: the read is a copy out of the page cache, a fraction of the hashing.
sha256 runs in the calling thread; any further algorithm (sha512, which has
no CPU instructions on most x86 hosts and runs at less than half sha256's
speed) runs on a helper thread over the same buffer -- hashlib releases the
GIL for large buffers. Ask for sha512 only where something needs it (the
labels and the catalog descriptor carry it, for HEPiX image lists): checking
a signed subject needs one digest, and :mod:`imagefactory.verify` computes
sha256 alone.

The file is opened without following a symlink, and read only. The loop is
plain Python between chunks of a few milliseconds of hashing, so Ctrl-C
(``KeyboardInterrupt``) stops it at once; the helper thread finishes its one
chunk and is joined before the exception leaves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

#: Bytes per read: large enough that syscalls and the thread hand-off are noise,
#: small enough to stay in the CPU caches' reach and to answer Ctrl-C at once.
CHUNK = 4 * 1024 * 1024

#: ``on_progress(done_bytes, total_bytes)``
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class FileDigest:
    """The digests of a file and the ``fstat`` of the file that was read."""

    hexdigests: dict[str, str]
    size: int
    st: os.stat_result


def hash_file(
    path: os.PathLike[str] | str,
    algorithms: Collection[str] = ("sha256",),
    on_progress: ProgressFn | None = None,
    *,
    fd: int | None = None,
) -> FileDigest:
    """Digest the regular file at ``path`` with every algorithm in one pass.

    Raises :class:`OSError` when the file cannot be opened (including a
    symlink, ``ELOOP``) or is not a regular file. With ``fd``, the file is read
    from its start through that open descriptor (``preadv``: its offset is left
    alone) and ``path`` only names it, so what is digested is what the caller
    holds open and hands on.
    """
    names = list(dict.fromkeys(algorithms))
    if not names:
        raise ValueError("no digest algorithm requested")
    hashes = {name: hashlib.new(name) for name in names}
    own = fd is None
    if fd is None:
        # O_NONBLOCK: a FIFO put in its place must not hang us before fstat refuses it.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{os.fspath(path)}: not a regular file")
        _advise_sequential(fd)
        first, *others = (hashes[name] for name in names)
        if others:
            done = _digest_two_threads(fd, first, others, st.st_size, on_progress)
        else:
            done = _digest(fd, first, st.st_size, on_progress)
    finally:
        if own:
            os.close(fd)
    return FileDigest({name: h.hexdigest() for name, h in hashes.items()}, done, st)


def _advise_sequential(fd: int) -> None:
    """Tell the kernel the file is read front to back (a larger readahead when cold)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):  # advice only
            advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _digest(fd: int, h: hashlib._Hash, total: int, on_progress: ProgressFn | None) -> int:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    done = 0
    while n := os.preadv(fd, [buffer], done):
        h.update(view[:n])
        done += n
        if on_progress is not None:
            on_progress(done, total)
    return done


def _digest_two_threads(
    fd: int,
    first: hashlib._Hash,
    others: list[hashlib._Hash],
    total: int,
    on_progress: ProgressFn | None,
) -> int:
    """``first`` here, ``others`` on a helper thread, over two alternating buffers.

    Chunk ``i`` is read into buffer ``i % 2`` only after the helper finished
    chunk ``i - 2`` (the same buffer): we wait for each chunk's helper work
    before handing it the next one.
    """
    buffers = (bytearray(CHUNK), bytearray(CHUNK))
    views = tuple(memoryview(b) for b in buffers)
    done = 0
    index = 0
    pending: Future[None] | None = None
    # Leaving the ``with`` (Ctrl-C included) waits for the helper's one chunk:
    # no buffer is ever freed or refilled under its feet.
    with ThreadPoolExecutor(max_workers=1) as pool:
        while n := os.preadv(fd, [buffers[index]], done):
            chunk = views[index][:n]
            if pending is not None:
                pending.result()
            pending = pool.submit(_update_all, others, chunk)
            first.update(chunk)
            done += n
            index ^= 1
            if on_progress is not None:
                on_progress(done, total)
        if pending is not None:
            pending.result()
    return done


def _update_all(hashes: list[hashlib._Hash], chunk: memoryview) -> None:
    for h in hashes:
        h.update(chunk)
