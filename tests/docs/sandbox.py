"""A throw-away host for running a guide as its reader would, as root.

The guides write where a real site writes (``/etc/imagefactory``,
``/var/lib/imagefactory``, ``/etc/libvirt/hooks``, ``/etc/systemd/system``).
On a shared test host that must not touch the real system, so every command
runs inside one private mount and PID namespace (``unshare``) in which
``/etc``, ``/opt``, ``/run``, ``/srv``, ``/usr/local`` and ``/var/{lib,cache,log}``
are overlays whose upper layers live in the sandbox's directory: the commands
see the real host (its tools, apt sources, the shared build cache under
``$HOME``) and everything they write vanishes with the namespace. Killing the
namespace's first process ends every process started in it (libvirtd, qemu).

The guides' install step (clone, ``scripts/setup``, the ``imagefactory``
link) is done here once: the checkout is a copy of the repository's files
(tracked, or new and not ignored) in ``/opt/imagefactory``, and
``/usr/local/bin/imagefactory`` is the repository's own
``.venv/bin/imagefactory``, the code under test.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.docs.guides import REPO

OVERLAID = ("/etc", "/opt", "/run", "/srv", "/usr/local", "/var/lib", "/var/cache", "/var/log")
#: libvirt's own state: empty in the sandbox, as on a fresh host.
LIBVIRT_STATE = ("/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt")
UNSHARE: tuple[str, ...] = ("unshare", "--mount", "--pid", "--fork", "--kill-child")
UNSHARE += ("--mount-proc", "--propagation", "private")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SETUP = """\
set -e
w=$1
for d in {overlaid}; do
  n=$(echo "$d" | tr / _)
  mkdir -p "$w/overlay/$n/upper" "$w/overlay/$n/work"
  o="lowerdir=$d,upperdir=$w/overlay/$n/upper,workdir=$w/overlay/$n/work"
  mount -t overlay overlay -o "$o" "$d"
done
for d in {state}; do mkdir -p "$d"; mount -t tmpfs -o mode=0755 tmpfs "$d"; done
# This host's /dev/kvm exists but hangs qemu (MACHINE.md): hidden here, so libvirt
# does not re-probe qemu on every start and the accelerator probe says TCG.
if [ -e /dev/kvm ]; then mount --bind /dev/null /dev/kvm; fi
touch "$w/ready"
# The namespace's init: it reaps the orphans (libvirtd's and qemu's daemonised
# children), which libvirtd otherwise waits on for ever as zombies.
exec /usr/bin/python3 -c "$REAPER"
"""
REAPER = """\
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


@dataclass
class Result:
    code: int
    output: str
    stopped: bool = False


class Sandbox:
    """One guide's namespace, its working directory and its shell state."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.home = work / "home"
        self.state = work / "state"
        self._ns: subprocess.Popen[bytes] | None = None
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.pid = 0

    # -- lifetime ---------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir()
        self.state.mkdir()
        (self.state / "cwd").write_text(str(self.home))
        (self.state / "env").write_text("")
        script = SETUP.format(overlaid=" ".join(OVERLAID), state=" ".join(LIBVIRT_STATE))
        self._ns = subprocess.Popen(
            [*UNSHARE, "env", f"REAPER={REAPER}", "sh", "-c", script, "sh", str(self.work)],
            stdin=subprocess.DEVNULL,
            stdout=self._log("namespace.log"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not (self.work / "ready").exists():
            if self._ns.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the sandbox namespace did not start: "
                    + (self.work / "namespace.log").read_text()
                )
            time.sleep(0.05)
        children = Path(f"/proc/{self._ns.pid}/task/{self._ns.pid}/children").read_text().split()
        self.pid = int(children[0])
        self._install()

    def stop(self) -> None:
        for daemon in self._daemons:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
        if self._ns is not None:
            # unshare --kill-child: the namespace's first process dies with unshare
            # (which ignores SIGTERM while it waits), and with it every process
            # still in the namespace.
            self._ns.kill()
            self._ns.wait()
        for daemon in self._daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=30)
        for log in self._logs:
            log.close()

    def _log(self, name: str) -> IO[bytes]:
        log = (self.work / name).open("wb")
        self._logs.append(log)
        return log

    def _install(self) -> None:
        """What the guides' (not run) install block does: checkout, setup, link."""
        files = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        checkout = self.work / "checkout"
        for name in filter(None, files):
            source = REPO / os.fsdecode(name)
            if source.is_file():
                target = checkout / os.fsdecode(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        venv = REPO / ".venv" / "bin" / "imagefactory"
        done = self.shell(
            f"mkdir -p /opt/imagefactory && cp -a {shlex.quote(str(checkout))}/. /opt/imagefactory/"
            f" && ln -sfn {shlex.quote(str(venv))} /usr/local/bin/imagefactory",
            keep_state=False,
        )
        if done.code != 0:
            raise RuntimeError(f"the sandbox's install failed: {done.output}")

    # -- running ----------------------------------------------------------

    def environment(self) -> dict[str, str]:
        # No settings file: the reader has none either. The default build cache is
        # the host's shared one ($XDG_CACHE_HOME or ~/.cache, outside the
        # overlays), so the example is built once per host, not once per run.
        # (A settings file would also move ./images: its paths are relative to it.)
        env = {
            "PATH": PATH,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "USER": "root",
            "LOGNAME": "root",
        }
        if "XDG_CACHE_HOME" in os.environ:
            env["XDG_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"]
        return env

    def _argv(self, script: str) -> list[str]:
        enter = ["nsenter", "-t", str(self.pid), "-m", "-p", "--"]
        return [*enter, "/bin/bash", "--noprofile", "--norc", "-c", script]

    def shell(
        self,
        command: str,
        *,
        timeout: float = 900,
        stop_after: tuple[str, ...] | None = None,
        keep_state: bool = True,
    ) -> Result:
        """Run one command as the reader's shell would: their working directory and exports.

        With ``stop_after``, the command is stopped (SIGTERM to its process
        group) once those lines were printed, in order.
        """
        from tests.docs.guides import missing_output

        state = shlex.quote(str(self.state))
        script = f'cd -- "$(cat {state}/cwd)" && . {state}/env\n{command}\n'
        if keep_state:
            script += f"__rc=$?\npwd > {state}/cwd\nexport -p > {state}/env\nexit $__rc\n"
        process = subprocess.Popen(
            self._argv(script),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        assert process.stdout is not None
        output = bytearray()
        stopped = threading.Event()
        timer = threading.Timer(timeout, lambda: _kill_group(process))
        timer.start()
        try:
            # Read what is there, not lines: a console's "login: " prompt ends
            # without a newline, and waits for one.
            while chunk := os.read(process.stdout.fileno(), 65536):
                output += chunk
                shown = output.decode("utf-8", "replace")
                if stop_after and missing_output(stop_after, shown) is None:
                    stopped.set()
                    _kill_group(process, signal.SIGTERM)
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            if process.poll() is None:
                _kill_group(process, signal.SIGKILL)
                process.wait()
            if stopped.is_set():
                # Stopped means stopped: the next command sees none of this one's
                # processes (a qemu that exec'd from it ends after its shell).
                _wait_group_gone(process.pid, timeout=60)
            output += process.stdout.read()
        finally:
            timer.cancel()
            process.stdout.close()
        return Result(process.returncode, output.decode("utf-8", "replace"), stopped.is_set())

    # -- what systemd would do ------------------------------------------------

    def start_libvirtd(self) -> None:
        """``systemctl restart libvirtd``: virtlogd and libvirtd, in the namespace."""
        log = self._log("libvirtd.log")
        daemon = subprocess.Popen(
            self._argv("virtlogd & exec libvirtd"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": PATH, "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        self._daemons.append(daemon)
        deadline = time.monotonic() + 90
        while self.shell("virsh -c qemu:///system version", keep_state=False).code != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "libvirtd did not start: " + (self.work / "libvirtd.log").read_text()
                )
            time.sleep(0.5)

    def unit(self, name: str) -> configparser.ConfigParser:
        found = self.shell(f"cat /etc/systemd/system/{shlex.quote(name)}", keep_state=False)
        if found.code != 0:
            raise AssertionError(f"{name} is not installed: {found.output}")
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read_string(found.output)
        return unit

    def run_service(self, name: str) -> Result:
        """``systemctl start NAME``: the unit checked by systemd-analyze, then its ExecStart.

        The environment file is read and ``${VAR}`` expanded as systemd does for
        a whole-word variable; the command runs with systemd's clean environment.
        """
        checked = self.shell(
            f"systemd-analyze verify /etc/systemd/system/{shlex.quote(name)}", keep_state=False
        )
        if checked.code != 0:
            return checked
        service = self.unit(name)["Service"]
        variables: dict[str, str] = {}
        if "EnvironmentFile" in service:
            text = self.shell(f"cat {shlex.quote(service['EnvironmentFile'])}", keep_state=False)
            for line in text.output.splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, value = line.split("=", 1)
                    variables[key.strip()] = value.strip().strip('"')
        argv = [
            re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), word)
            for word in shlex.split(service["ExecStart"])
        ]
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
        return self.shell(
            f"cd / && env -i PATH={PATH} LANG=C.UTF-8 HOME=/root {env} {shlex.join(argv)}",
            keep_state=False,
        )


def _wait_group_gone(group: int, timeout: float) -> None:
    """Wait until no process of the group is left; SIGKILL what is left at the timeout."""
    for sig in (signal.SIGKILL, None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)


def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    # Not under pytest's 0700 tmp: qemu under libvirtd runs as libvirt-qemu.
    work = Path(tempfile.mkdtemp(prefix="imagefactory-docs-", dir="/var/tmp"))
    work.chmod(0o755)
    box = Sandbox(work)
    try:
        box.start()
        yield box
    finally:
        box.stop()
        shutil.rmtree(work, ignore_errors=True)
