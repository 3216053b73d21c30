"""A pull or an instantiate in a child process, for the race tests (tests/instances/test_race.py).

``python -m tests.instances.racerunner pull CATALOG ROOT POLICY STORE RUN_DIR SIGNAL PRE HOLD``
pulls with the run directory as the store's instances (creating the file
``SIGNAL.began`` when it starts), waiting ``PRE`` seconds before it takes the
run directory's lock to remove images; right after it looked at an image's
holders (under the lock) it creates the file ``SIGNAL`` and waits
``HOLD`` seconds before it removes or retires the image: the window in which
an overlay published over the image would dangle.

``python -m tests.instances.racerunner instantiate STORE POLICY RUN_DIR IMAGE JOB WAIT DELAY``
waits until the file ``WAIT`` exists (``-``: does not wait), then ``DELAY``
seconds, then instantiates.

Each prints one JSON line, the outcome.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagefactory.errors import ImageFactoryError
from imagefactory.instances.make import instantiate
from imagefactory.instances.rundir import RunDir
from imagefactory.store.pull import PullOptions, pull
from imagefactory.trust import load_policy


class _SlowLook(RunDir):
    """The run directory, with a pause after each look at an image's holders."""

    def __init__(self, directory: Path, signal: Path, pre: float, hold: float) -> None:
        super().__init__(directory)
        self.signal = signal
        self.pre = pre
        self.hold = hold

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        time.sleep(self.pre)
        with super().locked():
            yield

    def holders(self, image_dir: Path) -> list[str]:
        jobs = super().holders(image_dir)
        self.signal.touch()
        time.sleep(self.hold)
        return jobs


def main(argv: list[str]) -> int:
    command, *args = argv
    out: dict[str, Any]
    try:
        if command == "pull":
            catalog, root, policy, store, run_dir, signal, pre, hold = args
            instances = _SlowLook(Path(run_dir), Path(signal), float(pre), float(hold))
            Path(signal + ".began").touch()
            result = pull(
                catalog,
                Path(root).read_bytes(),
                load_policy(Path(policy)),
                Path(store),
                PullOptions(instances=instances),
            )
            events = [[e.image, e.action, e.code] for e in result.events]
            out = {"ok": result.ok, "events": events}
        else:
            store, policy, run_dir, image, job, wait, delay = args
            deadline = time.monotonic() + 120
            while wait != "-" and not Path(wait).exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(float(delay))
            instance = instantiate(
                Path(image),
                job,
                store=Path(store),
                policy=load_policy(Path(policy)),
                run_dir=Path(run_dir),
            )
            out = {"ok": True, **instance.to_dict()}
    except ImageFactoryError as exc:
        out = {"ok": False, "error": exc.render(), "type": type(exc).__name__}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if out["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
