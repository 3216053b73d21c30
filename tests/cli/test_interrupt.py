"""Ctrl-C stops verify at once, in a real process, and leaves nothing behind (issue 16).

``imagefactory verify`` is started on a signed image whose disk is a 64 GiB
sparse file (hashing it takes most of a minute here); once the process has
read a few hundred MiB of it (its own ``/proc/PID/io`` read counter), it gets
SIGINT. It must exit with the interrupted code (130), say so, and remove the
private copy it verified (the image directory is group-writable, so verify
works on a copy of its own under ``TMPDIR``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagefactory.errors import EXIT_INTERRUPTED
from tests.fakes.imagedirs import key_sign, key_signer, make_image, new_key, vo_rules, write_policy

#: Ctrl-C must raise here, however the test run was started (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("sigint_default")

REPO = Path(__file__).resolve().parents[2]
DISK_SIZE = 64 << 30
#: Bytes the verify process must have read before it is interrupted: it is hashing.
HASHING = 256 << 20
#: Guards against a hang, not timings: the run would take about a minute uninterrupted.
GUARD_SECONDS = 120


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _signed_sparse_image(tmp_path: Path) -> tuple[Path, Path]:
    key = new_key(tmp_path, "atlas")
    policy = write_policy(
        tmp_path / "site.yaml",
        {"atlas": vo_rules(key_signer("atlas-vo", key))},
        max_virtual_size="128G",
    )

    def big(labels: dict[str, object]) -> None:
        disk = labels["disk"]
        assert isinstance(disk, dict)
        disk.update(size=DISK_SIZE, virtual_size=DISK_SIZE)

    image = make_image(tmp_path, edit=big)
    key_sign(image, key)  # signs the size above, with the small disk's digest
    with next(image.glob("*.raw")).open("r+b") as disk:
        disk.truncate(DISK_SIZE)
    os.chmod(image, 0o775)  # group-writable: verify works on a private copy
    return image, policy


def test_sigint_while_hashing_exits_130_and_cleans_up(tmp_path: Path) -> None:
    image, policy = _signed_sparse_image(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagefactory", "verify", str(image), "--policy", str(policy)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + GUARD_SECONDS
        while proc.poll() is None and _rchar(proc.pid) < HASHING:
            assert time.monotonic() < deadline, "verify never started hashing"
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert list(tmp.iterdir()), "no private copy while hashing"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=GUARD_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []
