"""Every command of the guides in docs/, run in order as their reader would run it.

Each guide runs in its own sandbox (tests/docs/sandbox.py: a private mount
and PID namespace where /etc, /var/lib, ... are throw-away overlays), as root,
from an empty working directory, with imagefactory installed as the guide's
install step leaves it. The example recipe is served by the host's shared
build cache, so a guide's build takes seconds once
the example was built on this host (the default cache, ~/.cache/imagefactory,
is outside the sandbox's overlays); the boot tests and libvirt are real.

A command must exit 0 (or the code its block's marker names) and print every
output line the guide shows under it. The blocks marked "not run" are only
those that cannot run on a test host; what the test does for them instead
(start libvirtd, run the pull service systemd would start) is in NOT_RUN.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import require_integration_host, require_or_skip
from tests.docs.guides import GUIDES, Block, load, missing_output
from tests.docs.sandbox import Sandbox, sandbox

pytestmark = pytest.mark.integration

TOOLS = ("unshare", "nsenter", "systemd-analyze", "git", "jq", "virsh", "libvirtd", "virtlogd")


def _libvirtd(box: Sandbox) -> None:
    box.start_libvirtd()


def _service(unit: str) -> Callable[[Sandbox], None]:
    def run(box: Sandbox) -> None:
        timer = unit.replace(".service", ".timer")
        checked = box.shell(f"systemd-analyze verify /etc/systemd/system/{timer}", keep_state=False)
        assert checked.code == 0, f"{timer}: {checked.output}"
        done = box.run_service(unit)
        assert done.code == 0, f"{unit} (what its timer starts) failed: {done.output}"

    return run


def _nothing(box: Sandbox) -> None:
    pass


#: What each not-run block stands for on a test host, by a command it holds.
NOT_RUN: dict[str, Callable[[Sandbox], None]] = {
    "git clone": _nothing,  # the sandbox's install did it (the checkout, setup, the link)
    "git push": _nothing,  # a merge request on a real forge
    "systemctl restart libvirtd": _libvirtd,
    "systemctl enable --now imagefactory-pull.timer": _service("imagefactory-pull.service"),
    "systemctl enable --now imagefactory-catalog-refresh.timer": _service(
        "imagefactory-catalog-refresh.service"
    ),
}


def instead_of(block: Block) -> Callable[[Sandbox], None]:
    actions = [act for key, act in NOT_RUN.items() if any(key in c.text for c in block.commands)]
    assert len(actions) == 1, f"{block.where}: a not-run block the guide test does not know"
    return actions[0]


@pytest.fixture
def box() -> Iterator[Sandbox]:
    require_integration_host()
    for tool in TOOLS:
        require_or_skip(shutil.which(tool) is not None, f"{tool} is not installed")
    with sandbox() as made:
        yield made


@pytest.mark.parametrize("name", GUIDES)
def test_guide_runs(name: str, box: Sandbox) -> None:
    guide = load(name)
    for block in guide.console:
        if block.not_run is not None:
            instead_of(block)(box)
            continue
        for command in block.commands:
            stop = command.expected if block.stop_after_output else None
            started = time.monotonic()
            done = box.shell(command.text, stop_after=stop)
            # Each command's wall time, shown with -s (or -rP): where a guide's time goes.
            first = command.text.splitlines()[0]
            print(f"{time.monotonic() - started:7.1f} s  {command.where}: $ {first[:100]}")
            shown = f"{command.where}: $ {command.text}\n--- output ---\n{done.output}"
            if block.stop_after_output:
                assert done.stopped, f"never printed {command.expected}: {shown}"
                continue
            assert done.code == block.exit_code, f"exit {done.code}, not {block.exit_code}: {shown}"
            missing = missing_output(command.expected, done.output)
            assert missing is None, f"did not print {missing!r} (in this order): {shown}"
