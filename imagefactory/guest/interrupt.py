"""Ctrl-C and SIGTERM stop a libguestfs call at once, not when it returns.

Python runs signal handlers only between bytecodes of the main thread, and a
libguestfs call is one C call (the launch alone takes 10-20 s under TCG): a
``KeyboardInterrupt`` would wait for it to end (issue 16: Ctrl-C took 19 s
in verify's inspection). Python's C-level handler also writes the signal's
number to the wakeup descriptor (:func:`signal.set_wakeup_fd`) at once; while
:func:`interruptible` is active, a helper thread waits there and, on SIGINT or
SIGTERM, kills the appliance -- the ``qemu-system-*`` processes this process
started since the block was entered (found in ``/proc``: the handle itself is
busy inside the call). The call then fails at once, the handle is closed by
its owner, and the ``KeyboardInterrupt`` goes on its way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

#: What the appliance's processes are called (``/proc/PID/comm``, 15 characters at most).
APPLIANCE_COMM = "qemu-system-"
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def children() -> set[int]:
    """The process ids of this process's children."""
    out: set[int] = set()
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out |= {int(pid) for pid in (task / "children").read_text().split()}
        except (OSError, ValueError):
            continue
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def kill_new_appliances(before: set[int]) -> list[int]:
    """SIGKILL every appliance process started since ``before``; their pids."""
    killed = []
    for pid in sorted(children() - before):
        if _comm(pid).startswith(APPLIANCE_COMM):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


class Interrupt:
    """Whether a stop signal killed the appliance (a failed call is then an interrupt)."""

    def __init__(self) -> None:
        self.signalled = threading.Event()


@contextlib.contextmanager
def interruptible() -> Iterator[Interrupt]:
    """While active (in the main thread), SIGINT or SIGTERM kill the new appliances at once.

    Elsewhere than the main thread (where no signal handler runs anyway) it
    does nothing. The previous wakeup descriptor is restored on the way out.
    """
    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    before = children()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter's main thread after all
        reader.close()
        writer.close()
        yield state
        return

    def watch() -> None:
        # Signal numbers are never 0: a 0 byte is the block's end, after which
        # nothing is left to kill; bytes before it are signals still to act on.
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            head, end, _ = data.partition(b"\0")
            if any(n in _STOP_SIGNALS for n in head):
                state.signalled.set()
                kill_new_appliances(before)
            if end or not data:
                return

    watcher = threading.Thread(target=watch, name="imagefactory-interrupt", daemon=True)
    watcher.start()
    try:
        yield state
    finally:
        signal.set_wakeup_fd(previous)
        try:
            writer.send(b"\0")  # the end: the watcher acts on what came before, then returns
        except OSError:  # a full buffer (a storm of signals): end its reads instead
            reader.shutdown(socket.SHUT_RDWR)
        watcher.join()
        reader.close()
        writer.close()
