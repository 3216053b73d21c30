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

import threading
from collections.abc import Callable

from imagefactory.boot.qemu import BootResult
from imagefactory.errors import BuildError
from imagefactory.progress import Progress

#: The progress line's name for it.
NAME = "boot-test"


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
