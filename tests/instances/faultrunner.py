"""instantiate or discard in a child process, stopped at a named point for kill -9.

``python -m tests.instances.faultrunner POINT instantiate STORE POLICY RUN_DIR IMAGE JOB``
``python -m tests.instances.faultrunner POINT discard RUN_DIR JOB``

At ``POINT`` it prints ``at POINT`` and sleeps until killed; ``none`` runs
through and prints one JSON line, the outcome. ``--start T`` waits until the
wall-clock time ``T`` first (two runners started together race for real).
Points: instantiate ``before-create`` (the .new- directory exists, empty),
``after-create`` (overlay made), ``after-record`` (record written),
``before-publish`` (about to rename); discard ``after-rename`` (renamed to
.trash-), ``mid-delete`` (the overlay deleted, the record not yet).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagefactory.errors import ImageFactoryError
from imagefactory.gate.overlay import OVERLAY
from imagefactory.instances import live, make
from imagefactory.trust import load_policy


def _stop(point: str) -> None:
    sys.stdout.write(f"at {point}\n")
    sys.stdout.flush()
    time.sleep(600)


def _around(module: Any, name: str, before: str | None, after: str | None, point: str) -> None:
    original: Callable[..., Any] = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before == point:
            _stop(point)
        result = original(*args, **kwargs)
        if after == point:
            _stop(point)
        return result

    setattr(module, name, wrapped)


def _mid_delete(point: str) -> None:
    original: Callable[[Path], None] = getattr(live, "rmtree_readonly")  # noqa: B009

    def wrapped(path: Path) -> None:
        if point == "mid-delete":
            (path / OVERLAY).unlink(missing_ok=True)
            _stop(point)
        original(path)

    setattr(live, "rmtree_readonly", wrapped)  # noqa: B010


def main(argv: list[str]) -> int:
    if argv[0] == "--start":
        time.sleep(max(0.0, float(argv[1]) - time.time()))
        argv = argv[2:]
    point, command, *args = argv
    _around(make, "_create", "before-create", "after-create", point)
    _around(make, "write_record", None, "after-record", point)
    _around(make, "_publish", "before-publish", None, point)
    _around(live, "rmtree_readonly", "after-rename", None, point)
    _mid_delete(point)
    out: dict[str, Any]
    try:
        if command == "instantiate":
            store, policy, run_dir, image, job = args
            instance = make.instantiate(
                Path(image),
                job,
                store=Path(store),
                policy=load_policy(Path(policy)),
                run_dir=Path(run_dir),
            )
            out = {"ok": True, **instance.to_dict()}
        else:
            run_dir, job = args
            out = {"ok": True, **live.discard(Path(run_dir), job).to_dict()}
    except ImageFactoryError as exc:
        out = {"ok": False, "error": exc.render(), "type": type(exc).__name__}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if out["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
