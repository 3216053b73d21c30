"""The KVM probe can run while diskimage-builder works; a later choice waits for it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imagefactory.host import accel


def test_background_probe_is_waited_for_and_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    release = threading.Event()

    def slow_probe(qemu: str, kernel: Path, stop: object = None) -> bool:
        calls.append(qemu)
        release.wait(5)
        return False

    monkeypatch.setattr(accel, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(accel, "host_kernel", lambda: tmp_path / "vmlinuz")
    monkeypatch.setattr(accel, "probe_kvm", slow_probe)
    monkeypatch.setattr(accel, "_cache_key", lambda qemu: f"boot:{qemu}")
    monkeypatch.setattr(accel, "_probes", {})
    cache = tmp_path / "accel.json"
    accel.probe_in_background("auto", "qemu-system-x86_64", cache)
    accel.probe_in_background("auto", "qemu-system-x86_64", cache)  # no second probe
    threading.Timer(0.2, release.set).start()
    assert accel.choose_accel("auto", "qemu-system-x86_64", cache) == "tcg"
    assert release.is_set()  # it answered only once the running probe had finished
    assert calls == ["qemu-system-x86_64"]
    assert accel.choose_guest_accel("auto", cache) == "tcg"
    assert calls == ["qemu-system-x86_64"]  # answered by the same probe


def test_nothing_starts_when_the_setting_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_probes", {})
    accel.probe_in_background("tcg", "qemu-system-x86_64", Path("/nonexistent/accel.json"))
    assert accel._probes == {}


CHILD = """
import sys, time
from pathlib import Path
from imagefactory.host import accel
accel.kvm_device_usable = lambda: True
accel.host_kernel = lambda: Path("/nonexistent/vmlinuz")
accel.probe_in_background("auto", sys.argv[1], Path(sys.argv[2]))
pid_file = Path(sys.argv[3])
for _ in range(200):
    if pid_file.exists() and pid_file.read_text().strip():
        break
    time.sleep(0.05)
print("exiting while the probe runs", flush=True)
"""


def test_a_process_that_exits_while_the_probe_hangs_leaves_no_qemu_behind(
    tmp_path: Path,
) -> None:
    """The probe's timeout lives in its thread, which dies with the process: at exit the
    probe's qemu (here a stand-in that hangs, as qemu under a broken KVM does) is stopped."""
    pid_file = tmp_path / "qemu.pid"
    qemu = tmp_path / "fake-qemu"
    qemu.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    qemu.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(qemu), str(tmp_path / "accel.json"), str(pid_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "exiting while the probe runs" in done.stdout
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "accel.json").exists()  # a stopped probe gave no verdict
