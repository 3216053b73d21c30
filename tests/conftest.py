"""Shared fixtures. Integration tests need root and the host packages; under CI
(CI=true) a missing prerequisite fails the run instead of skipping it."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip locally; fail in CI, where every test must really run."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def require_integration_host() -> None:
    """Root plus the tools a real build and boot need."""
    require_or_skip(os.geteuid() == 0, "integration tests run as root (DIB's chroot)")
    for tool in ("debootstrap", "qemu-img", "qemu-system-x86_64", "sfdisk", "mkfs.ext4"):
        require_or_skip(shutil.which(tool) is not None, f"{tool} is not installed")


@pytest.fixture
def integration_host() -> None:
    """Root plus the tools a real build and boot need."""
    require_integration_host()


@pytest.fixture
def sigint_default() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here and in the processes a test starts.

    A shell without job control starts background commands with SIGINT
    ignored, and an ignored SIGINT stays ignored across exec (Python then
    installs no KeyboardInterrupt handler): a test of Ctrl-C would test nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
