"""Work the build starts in a thread and collects later: the disks' digests and
their copy into the build cache.

Both only read the finished files, as the read-only audit does, so they run
while the audit's appliance boots: on a host with two cores the audit's qemu
takes one and this work the other. The label step collects the digests (sha256
of every image, sha512 too of the one the labels describe), the store step the
copy. Nothing changes the files in between: they are the build's own, in its
private staging directory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from imagefactory.errors import BuildError

T = TypeVar("T")


class Background(Generic[T]):
    """``work()`` in a daemon thread; :meth:`result` waits for it and re-raises its error.

    Daemon: a build that is interrupted or fails elsewhere does not wait for
    it (it only reads; its file is removed with the staging directory).
    """

    def __init__(self, name: str, work: Callable[[], T]) -> None:
        self._work = work
        self._result: list[T] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result.append(self._work())
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> T:
        """The work's result, once done; joined in short slices so Ctrl-C is not held up."""
        while self._thread.is_alive():
            self._thread.join(0.5)
        if self._error is not None:
            raise self._error
        if not self._result:  # pragma: no cover - _run sets one of the two
            raise BuildError("internal error: background work ended without a result")
        return self._result[0]
