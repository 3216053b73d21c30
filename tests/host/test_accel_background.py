"""The KVM probe can run while diskimage-builder works; a later choice waits for it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imagefactory.host import accel


def test_background_probe_is_waited_for_and_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    release = threading.Event()

    def slow_probe(qemu: str, kernel: Path) -> bool:
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
