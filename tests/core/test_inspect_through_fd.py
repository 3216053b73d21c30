"""inspect_image on ``/proc/PID/fd/N`` (verify's open disk, as pull and run hand it over).

The format checks read through the descriptor instead of refusing the link;
the launch itself is stood in for here (the real one is in the integration
tests: pull with a policy that inspects).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagefactory import inspection
from imagefactory.diskformat import UnsafeImageError
from imagefactory.profiles import load_profile


class _Launched(Exception):
    pass


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    paths: list[str] = []

    def fake_open_guest(path: Path, fmt: str, **_: Any) -> Any:
        paths.append(str(path))
        raise _Launched

    monkeypatch.setattr(inspection, "open_guest", fake_open_guest)
    return paths


def test_the_descriptor_path_passes_the_format_checks(qcow2: Path, launched: list[str]) -> None:
    fd = os.open(qcow2, os.O_RDONLY)
    try:
        proc = Path(f"/proc/{os.getpid()}/fd/{fd}")
        with pytest.raises(_Launched):
            inspection.inspect_image(
                proc,
                load_profile("worker-node-default"),
                declared_format="qcow2",
                accel=lambda: "tcg",
                hash_disk=False,
                disk_fd=fd,
            )
    finally:
        os.close(fd)
    assert launched == [str(proc)]  # the appliance reopens the same open file


def test_without_the_descriptor_a_link_is_still_refused(qcow2: Path, launched: list[str]) -> None:
    link = qcow2.with_name("link.qcow2")
    link.symlink_to(qcow2)
    with pytest.raises(UnsafeImageError) as err:
        inspection.inspect_image(
            link, load_profile("worker-node-default"), declared_format="qcow2", accel=lambda: "tcg"
        )
    assert err.value.codes == ["not-regular-file"]
    assert launched == []
