"""The boot test in a thread of its own, alongside the audit and label steps.

The read-only audit (libguestfs, a throw-away overlay in front of the disk)
and the boot test (qemu with ``snapshot=on``) both only read the finished
disk, so the build runs them at once. The boot test runs in this thread;
the audit stays in the main thread, where Ctrl-C (and SIGTERM, which the CLI
turns into the same) arrives. The build stops the job on any way out
(:meth:`BootJob.stop`, then :meth:`BootJob.wait`): qemu is stopped by
:func:`imagefactory.run.run` and its process group reaped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator

from imagefactory.boot.qemu import BootResult
from imagefactory.errors import BuildError
from imagefactory.progress import Progress

log = logging.getLogger(__name__)

#: The progress line's name for it.
NAME = "boot-test"
#: How much nicer the audit runs than the boot test alongside it.
AUDIT_NICE = 10


@contextlib.contextmanager
def below_the_boot_test(alongside: bool) -> Iterator[None]:
    """While a boot test runs alongside, this thread's work runs at a lower CPU priority.

    For the audit: libguestfs forks its appliance from the calling thread,
    and a child inherits that thread's nice value, so the whole appliance
    yields the CPU to the boot test's qemu. Under TCG both are CPU-bound and
    the boot test is the longer of the two (the end of the build waits for
    it): at the same priority each slowed the other on a 2-core host; this
    way the boot test keeps its pace and the audit takes the cycles it
    leaves (a booting guest idles often). Only the scheduling changes: both
    still read the whole disk and check all they checked. The priority is
    restored afterwards (raising it back needs CAP_SYS_NICE, which a build,
    run as root, has; without it the thread stays nicer, which costs only
    speed).
    """
    if not alongside:
        yield
        return
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(before + AUDIT_NICE, 19))
    except OSError as exc:
        log.debug("cannot lower the audit's CPU priority: %s", exc)
        yield
        return
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, before)
        except OSError as exc:
            log.debug("cannot restore this thread's CPU priority: %s", exc)


class BootJob:
    """One boot test started in the background; :meth:`wait` for its result."""

    def __init__(
        self, boot: Callable[[threading.Event], BootResult], progress: Progress, doing: str
    ) -> None:
        self._boot = boot
        self._progress = progress
        self._doing = doing
        self._stop = threading.Event()
        self._result: BootResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="imagefactory-boot-test")

    def start(self) -> None:
        self._progress.alongside(NAME, self._doing)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._boot(self._stop)
        except BaseException as exc:  # handed to the main thread by wait()
            self._error = exc
        finally:
            self._progress.alongside(NAME, None)
        if self._result is not None and not self._stop.is_set():
            state = "passed" if self._result.passed else "FAILED"
            self._progress.note(f"boot test (alongside): {state}, {self._result.reason}")

    def stop(self) -> None:
        """Ask qemu to stop (the build is being interrupted or failed elsewhere)."""
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self, on_tick: Callable[[], None] | None = None) -> BootResult:
        """The result, once the thread has ended; its exception is raised here.

        Joins in short slices, so a Ctrl-C in the main thread is not held up.
        """
        if self._thread.ident is None:
            raise BuildError("internal error: the boot test was never started")
        while self._thread.is_alive():
            self._thread.join(0.5)
            if on_tick is not None and self._thread.is_alive():
                on_tick()
        if self._error is not None:
            raise self._error
        if self._result is None:  # pragma: no cover - _run sets one of the two
            raise BuildError("internal error: the boot test ended without a result")
        return self._result
