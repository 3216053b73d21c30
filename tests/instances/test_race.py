"""Real processes: an instantiate racing a pull that removes or retires its base.

Each round publishes a newer version, so the pull supersedes the image an
instantiate is starting from; in half the rounds another job already holds
it (so pull retires it rather than removing it). The instantiate starts in
the window between pull's look at the image's holders and its removal (the
pull waits there), well before pull removes anything, or at a random moment. Whatever the
order: an overlay that exists has its base in the store and passes the gate
(never a dangling overlay, never one made over a retired base), and an image
an instance holds is retired, never removed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from imagefactory.gate.overlay import OVERLAY, RECORD, read_record
from imagefactory.store.layout import Store
from tests.conftest import REPO
from tests.instances.conftest import KEY, Site

ROUNDS = 8
#: Where the instantiate starts: in pull's window between its look at the holders and
#: the removal, well before the pull takes the lock, or at a random moment.
MODES = ("window", "before", "random", "random")


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "tests.instances.racerunner", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _outcome(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=180)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_an_instantiate_racing_a_pull_never_leaves_a_dangling_overlay(
    site: Site, tmp_path: Path
) -> None:
    rng = random.Random(11)  # noqa: S311 -- test timing, not security
    world = site.world
    root = tmp_path / "root.json"
    root.write_bytes(world.root_json)
    key = KEY
    seen: set[tuple[str, bool, str]] = set()
    for n in range(ROUNDS):
        base = world.store / key
        held = n % 2 == 1  # half the rounds: another job already holds the base
        mode = MODES[(n // 2) % len(MODES)]
        if held:
            site.instantiate(f"holder-{n}", base)
        version = f"1.{n + 1}"
        world.publish(world.image(version=version))
        signal = tmp_path / f"looked-{n}"
        pull = _child(
            "pull",
            str(world.catalog.directory),
            str(root),
            str(world.policy_path),
            str(world.store),
            str(site.run_dir),
            str(signal),
            {"window": "0", "before": "2.0"}.get(mode, f"{rng.uniform(0.0, 1.0):.2f}"),
            "0.8" if mode == "window" else "0.1",
        )
        job = f"race-{n}"
        inst = _child(
            "instantiate",
            str(world.store),
            str(world.policy_path),
            str(site.run_dir),
            str(base),
            job,
            str(signal) if mode == "window" else f"{signal}.began",
            {"window": "0.05", "before": "0"}.get(mode, f"{rng.uniform(0.0, 1.0):.2f}"),
        )
        made, pulled = _outcome(inst), _outcome(pull)
        # (``ok`` is false: the older versions still in the catalog are below the minimum.)
        assert [key.rsplit("/", 1)[0] + f"/{version}", "installed"] in [
            e[:2] for e in pulled["events"]
        ]
        job_dir = site.run_dir / job
        if made["ok"]:
            record = read_record(job_dir / RECORD)
            assert record is not None
            assert Path(record.base).is_file(), f"round {n}: the overlay dangles: {pulled}"
            allowed, text = site.gate(job_dir / OVERLAY)
            assert allowed, f"round {n}: {text}"
        else:
            assert not job_dir.exists()
            assert made["type"] == "InstanceError", made
        holders = site.run_dir.is_dir() and [
            p.name for p in site.run_dir.iterdir() if p.name in (job, f"holder-{n}")
        ]
        retired = Store(world.store).retired()
        if holders:
            assert base.is_dir(), f"round {n}: a base in use was removed"
            assert sorted(retired[key]["held_by"]) == sorted(holders)
        else:
            assert not base.exists()
        seen.add((mode, bool(made["ok"]), "retired" if key in retired else "removed"))
        key = key.rsplit("/", 1)[0] + f"/{version}"
    # Both orders happened: the overlay first (its base then retired), and the removal
    # or retirement first (the instantiate refused, in pull's window every time).
    assert ("before", True, "retired") in seen, seen
    assert not any(ok for mode, ok, _ in seen if mode == "window"), seen
