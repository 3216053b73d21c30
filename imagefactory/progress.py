"""Progress for long steps, on stderr (stdout stays for results and ``--json``).

On a terminal a status line is rewritten in place; elsewhere (CI logs) a line
is printed when the sub-step changes, at most every few seconds, so logs show
movement without drowning in it.

Work that runs alongside the current step in another thread (the boot test
beside the audit) shows on the same status line (:meth:`Progress.alongside`);
every write holds one lock, so two threads never interleave a line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

NON_TTY_INTERVAL = 10.0


class Progress:
    """Step headers, sub-step status lines and a final timing per step."""

    def __init__(self, total: int = 0, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.index = 0
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.timings: dict[str, float] = {}
        self._step = ""
        self._step_start = 0.0
        self._last_status = ""
        self._last_print = 0.0
        self._lock = threading.RLock()
        #: name -> (what it is doing, when it started): work running alongside.
        self._alongside: dict[str, tuple[str, float]] = {}

    def _write(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                self.stream.write(text)
                self.stream.flush()

    def alongside(self, name: str, text: str | None) -> None:
        """Show (``text``) or stop showing (None) work ``name`` running in another thread."""
        with self._lock:
            if text is None:
                self._alongside.pop(name, None)
            else:
                self._alongside[name] = (text, time.monotonic())

    def _with_alongside(self, text: str) -> str:
        now = time.monotonic()
        extra = [f"{n}: {t} {now - s:.0f}s" for n, (t, s) in self._alongside.items()]
        return " | ".join([text, *extra]) if extra else text

    @contextlib.contextmanager
    def step(self, name: str, description: str) -> Iterator[None]:
        """Announce a step, time it, and print how it ended."""
        self.index += 1
        self._step = name
        self._step_start = time.monotonic()
        self._last_status = ""
        counter = f"[{self.index}/{self.total}] " if self.total else ""
        self._write(f"==> {counter}{name}: {description}\n")
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - self._step_start
            self.timings[name] = round(elapsed, 3)
            self._clear()
            self._write(f"    {name} {'done' if ok else 'FAILED'} in {elapsed:.1f}s\n")

    def status(self, text: str) -> None:
        """Show what the current step is doing now (and what runs alongside it)."""
        with self._lock:
            self._status(self._with_alongside(text))

    def _status(self, text: str) -> None:
        now = time.monotonic()
        elapsed = now - self._step_start
        if self.tty:
            line = f"    {elapsed:6.0f}s {text}"[:118]
            self._write("\r\033[K" + line)
            self._last_status = text
            return
        if text != self._last_status and now - self._last_print >= NON_TTY_INTERVAL:
            self._write(f"    {elapsed:6.0f}s {text}\n")
            self._last_print = now
        self._last_status = text

    def note(self, text: str) -> None:
        with self._lock:
            self._clear()
            self._write(f"    {text}\n")

    def _clear(self) -> None:
        if self.tty and self._last_status:
            self._write("\r\033[K")
            self._last_status = ""
