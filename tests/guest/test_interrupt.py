"""guest.interrupt: Ctrl-C kills the appliance processes started inside the block.

A real child process named like the appliance (``qemu-system-*``: a copy of
``sleep``) stands in for libguestfs's qemu; the main thread is blocked in a
wait, as it is inside a libguestfs call, when this process gets SIGINT.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from imagefactory.guest.interrupt import children, interruptible

#: Ctrl-C must raise here, however the test run was started (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("sigint_default")

#: Guards against a hang, not timings.
GUARD_SECONDS = 30


def _fake_appliance(tmp_path: Path, name: str = "qemu-system-x86_64") -> Path:
    sleeper = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    return sleeper


def _ctrl_c_while_waiting(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to this process while its main thread waits (the handler interrupts it)."""
    os.kill(os.getpid(), signal.SIGINT)
    proc.wait(timeout=GUARD_SECONDS)


def test_sigint_kills_the_appliance_started_inside(tmp_path: Path) -> None:
    other = subprocess.Popen([_fake_appliance(tmp_path, "qemu-system-old"), "600"])
    try:
        with interruptible() as interrupt:
            appliance = subprocess.Popen([_fake_appliance(tmp_path), "600"])
            assert appliance.pid in children()
            with pytest.raises(KeyboardInterrupt):
                _ctrl_c_while_waiting(appliance)
        assert interrupt.signalled.is_set()
        assert appliance.wait(timeout=GUARD_SECONDS) == -signal.SIGKILL
        assert other.poll() is None  # started before the block: not ours to kill
    finally:
        other.kill()
        other.wait()


def test_a_child_that_is_not_an_appliance_is_left_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "600"])
    try:
        with interruptible() as interrupt, pytest.raises(KeyboardInterrupt):
            _ctrl_c_while_waiting(sleeper)
        assert interrupt.signalled.is_set()
        assert sleeper.poll() is None  # not an appliance
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_previous_wakeup_descriptor_is_restored() -> None:
    import socket

    a, b = socket.socketpair()
    b.setblocking(False)
    previous = signal.set_wakeup_fd(b.fileno())
    try:
        with interruptible():
            pass
        assert signal.set_wakeup_fd(b.fileno()) == b.fileno()
    finally:
        signal.set_wakeup_fd(previous)
        a.close()
        b.close()


@pytest.mark.integration
def test_ctrl_c_during_a_real_appliance_launch_stops_it(tmp_path: Path) -> None:
    """The real thing: libguestfs launching (seconds inside one C call) gets SIGINT."""
    import threading
    import time

    from imagefactory.guest.handle import open_guest
    from imagefactory.guest.interrupt import APPLIANCE_COMM

    disk = tmp_path / "blank.raw"
    with disk.open("wb") as stream:
        stream.truncate(16 << 20)
    before = children()
    seen: list[int] = []

    def interrupt_once_the_appliance_runs() -> None:
        deadline = time.monotonic() + GUARD_SECONDS
        while time.monotonic() < deadline:
            for pid in children() - before:
                comm = Path(f"/proc/{pid}/comm")
                if comm.exists() and comm.read_text().startswith(APPLIANCE_COMM):
                    seen.append(pid)
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            time.sleep(0.05)

    helper = threading.Thread(target=interrupt_once_the_appliance_runs, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt), open_guest(disk, "raw", accel="tcg"):
        pass  # not reached: the launch is interrupted
    helper.join(GUARD_SECONDS)
    assert seen, "the appliance never started"
    assert not (children() - before), "an appliance process outlived the interrupt"
