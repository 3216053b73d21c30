"""The one place where imagefactory runs external commands.

Every subprocess goes through :func:`run`: an argv list (never a shell
string), a clean environment, the command logged as ``+ cmd`` at debug level,
output streamed line by line to a log file and to an optional progress
callback, and failures explained (exit status, signal, "not found") with a
command line the user can paste. On interruption (Ctrl-C, SIGTERM) the child's
whole process group is asked to stop and waited for, so tools such as
diskimage-builder can run their own cleanup (unmounts, loop devices) before we
return.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from imagefactory.errors import CommandError, MissingToolError

log = logging.getLogger(__name__)

#: Variables passed through from the caller's environment to every command.
#: Everything else is dropped, so a build does not depend on the shell it ran in.
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TERM",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)

#: How long a child gets to clean up after SIGINT before it is killed.
INTERRUPT_GRACE_SECONDS = 60.0

#: Lines of output kept for the error message when a command fails.
TAIL_LINES = 60

Argv = Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Completed:
    """The result of a finished command."""

    argv: list[str]
    returncode: int
    stdout: str
    #: ``until`` matched and the command was stopped on purpose.
    stopped: bool = False
    #: The command ran past ``timeout`` and was stopped.
    timed_out: bool = False
    #: ``stop`` was set and the command was stopped.
    cancelled: bool = False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command runs with: a few passthrough variables plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH_ENV}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


class _Reader:
    """Splits a child's output into lines as it arrives, keeping a tail."""

    def __init__(
        self,
        logfile: IO[str] | None,
        on_line: Callable[[str], None] | None,
        echo: bool,
        keep_all: bool,
    ) -> None:
        self.logfile = logfile
        self.on_line = on_line
        self.echo = echo
        self.keep_all = keep_all
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.everything: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Take a chunk of output; return the lines it completed."""
        text = self.decoder.decode(chunk)
        if self.logfile is not None:
            self.logfile.write(text)
        if self.echo:
            os.write(2, chunk)
        if self.keep_all:
            self.everything.append(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.tail.append(line)
            if self.on_line is not None:
                self.on_line(line)
        return lines

    def finish(self) -> None:
        self.feed(self.decoder.decode(b"", final=True).encode())
        if self.pending:
            self.tail.append(self.pending)
            if self.on_line is not None:
                self.on_line(self.pending)


def run(  # noqa: PLR0915 -- one linear story: spawn, stream, stop, explain
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: str | None = None,
    capture: bool = False,
    logfile: IO[str] | None = None,
    on_line: Callable[[str], None] | None = None,
    until: Callable[[str], bool] | None = None,
    timeout: float | None = None,
    check: bool = True,
    echo: bool = False,
    stop: threading.Event | None = None,
    pass_fds: Sequence[int] = (),
) -> Completed:
    """Run ``argv`` and wait for it.

    ``env`` is merged into :func:`clean_env`. Output (stdout and stderr
    together, unless ``capture``) goes to ``logfile`` and, line by line, to
    ``on_line`` as it arrives; ``echo`` copies it to our stderr (``-v``). With
    ``capture`` stdout is returned and stderr is kept apart for the error
    message. ``until`` sees every line and the unfinished last one (a prompt
    has no newline); when it returns true the command is stopped and the
    result has ``stopped`` set. After ``timeout`` seconds the command is
    stopped and, with ``check``, reported as failed. Setting ``stop`` (from
    another thread: the build stopping a boot test that runs alongside) stops
    the command the same way; the result has ``cancelled`` set. ``pass_fds``:
    descriptors the command inherits, at the same numbers (a file it is given
    as ``/proc/self/fd/N``).

    Raises :class:`CommandError` when the command fails and ``check`` is true,
    :class:`MissingToolError` when the program does not exist.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    full_env = clean_env(env)
    pasteable = shlex.join(args)
    log.debug("+ %s", pasteable)
    if logfile is not None:
        logfile.write(f"+ {pasteable}\n")
        logfile.flush()
    if os.sep not in args[0] and shutil.which(args[0], path=full_env.get("PATH")) is None:
        raise MissingToolError({args[0]: _debian_package_for(args[0])})

    try:
        proc = subprocess.Popen(
            args,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            # Own process group: a Ctrl-C reaches us first, and we decide how the
            # child (and everything it spawned) is told to stop.
            process_group=0,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise MissingToolError({args[0]: _debian_package_for(args[0])}) from exc

    if proc.stdout is None:  # Popen was given stdout=PIPE; cannot happen
        raise RuntimeError("subprocess stdout pipe missing")
    stdout_fd = proc.stdout.fileno()
    reader = _Reader(None if capture else logfile, on_line, echo, keep_all=capture)
    stderr_chunks: list[bytes] = []
    stderr_thread: threading.Thread | None = None
    if capture and proc.stderr is not None:
        stderr_thread = threading.Thread(
            target=lambda: stderr_chunks.append(proc.stderr.read() if proc.stderr else b""),
            daemon=True,
        )
        stderr_thread.start()

    timed_out = threading.Event()
    stopped = False
    timer: threading.Timer | None = None
    if timeout is not None:

        def _on_timeout() -> None:
            timed_out.set()
            _stop_group(proc, signal.SIGTERM)

        timer = threading.Timer(timeout, _on_timeout)
        timer.daemon = True
        timer.start()
    cancelled = threading.Event()
    if stop is not None:
        event = stop

        def _watch() -> None:
            while proc.poll() is None:
                if event.wait(0.2):
                    cancelled.set()
                    _stop_group(proc, signal.SIGTERM)
                    return

        threading.Thread(target=_watch, daemon=True).start()
    try:
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        fd = stdout_fd
        while chunk := os.read(fd, 65536):
            lines = reader.feed(chunk)
            if until is not None and not stopped and any(map(until, [*lines, reader.pending])):
                stopped = True
                _stop_group(proc, signal.SIGTERM)
        reader.finish()
        returncode = proc.wait()
    except BaseException:
        # KeyboardInterrupt, SystemExit from a SIGTERM handler, or a bug in a
        # callback: stop the child group and wait, so its cleanup runs.
        _interrupt(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if logfile is not None:
            logfile.flush()
        if stderr_thread is not None:
            stderr_thread.join()  # the child is gone: its stderr is at end of file
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    stderr_text = b"".join(stderr_chunks).decode("utf-8", "replace")
    stdout = "".join(reader.everything)

    failed = not stopped and (returncode != 0 or timed_out.is_set() or cancelled.is_set())
    if failed and check:
        raise CommandError(
            _describe_failure(pasteable, returncode, timeout if timed_out.is_set() else None),
            argv=args,
            returncode=returncode,
            output=stderr_text if capture else "\n".join(reader.tail),
        )
    return Completed(
        argv=args,
        returncode=returncode,
        stdout=stdout,
        stopped=stopped,
        timed_out=timed_out.is_set(),
        cancelled=cancelled.is_set(),
    )


def replace_process(argv: Argv, pass_fds: Sequence[int] = ()) -> NoReturn:
    """Become ``argv`` (``execvp``): for a gate that checks a command and then *is* it.

    The command keeps our pid, stdio, environment and signals, as if the user
    had run it directly; nothing of ours runs after it. ``pass_fds`` stay open
    in it (every other descriptor of ours is close-on-exec). Raises
    :class:`MissingToolError` when the program does not exist.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    log.debug("+ exec %s", shlex.join(args))
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    try:
        os.execvp(args[0], args)  # noqa: S606 -- an argv list, no shell
    except FileNotFoundError as exc:
        raise MissingToolError({args[0]: _debian_package_for(args[0])}) from exc


def output_of(argv: Argv, *, env: Mapping[str, str] | None = None) -> str:
    """Run a short query command and return its stdout, stripped."""
    return run(argv, env=env, capture=True).stdout.strip()


def _stop_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    log.warning("stopping %s (pid %d) and waiting for its cleanup", proc.args, proc.pid)
    _stop_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=INTERRUPT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _stop_group(proc, signal.SIGKILL)
        proc.wait()


def _describe_failure(pasteable: str, returncode: int, timeout: float | None) -> str:
    if timeout is not None:
        return f"command timed out after {timeout:.0f}s and was stopped: {pasteable}"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"command killed by {name}: {pasteable}"
    if returncode == 127:
        return f"command not found (exit 127; a tool it calls is missing): {pasteable}"
    return f"command failed with exit status {returncode}: {pasteable}"


#: Which Debian package provides each external tool imagefactory calls.
DEBIAN_PACKAGES: dict[str, str] = {
    "disk-image-create": "python3-venv (diskimage-builder is installed into the venv)",
    "debootstrap": "debootstrap",
    "sudo": "sudo",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-i386": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "mksquashfs": "squashfs-tools",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "tar": "tar",
    "chroot": "coreutils",
    "guestfish": "libguestfs-tools",
    "losetup": "mount",
    "gpgv": "gpgv",
    "gpg": "gpg",
    "apt-ftparchive": "apt-utils",
    "dpkg-deb": "dpkg",
}


def _debian_package_for(tool: str) -> str:
    return DEBIAN_PACKAGES.get(Path(tool).name, "(unknown: see README.md, Host requirements)")
