"""Faults: kill -9 during publish and pull, concurrent publishes, a full disk.

Each child process is ``tests/catalog/faultrunner.py``; the test kills it at a
random moment after it is ready (the seed is printed on failure), then checks
the invariants: the catalog loads and a fresh site verifies it; the store
holds only complete, verified images; a rerun completes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from imagefactory.errors import CatalogError
from imagefactory.store.layout import Store
from imagefactory.store.transport import Source
from imagefactory.store.updater import CatalogClient
from imagefactory.trust import load_policy
from imagefactory.verify.pipeline import verify_image
from tests.catalog.world import World, make_world

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 12


def _start(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.catalog.faultrunner", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def _finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    # Read through the same buffered stream as readline() did: communicate() would
    # read the pipe underneath it and miss what that buffer already holds.
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=120)
    proc.stdout.close()
    lines = out.strip().splitlines()
    assert lines, (proc.returncode, proc.args)
    outcome: dict[str, object] = json.loads(lines[-1])
    return outcome


def _kill_at_random(proc: subprocess.Popen[str], rng: random.Random, upto: float) -> bool:
    """Kill ``proc`` at a random moment within ``upto`` s; whether it was still running."""
    time.sleep(rng.uniform(0, upto))
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if proc.stdout is not None:
        proc.stdout.close()
    return running


def _catalog_verifies(world: World) -> list[str]:
    """The catalog loads (signatures checked) and a brand-new site refreshes it."""
    world.catalog.load()
    with tempfile.TemporaryDirectory() as state:
        client = CatalogClient(
            Source.parse(str(world.catalog.directory)), world.root_json, Path(state)
        )
        refresh = client.refresh()
    assert refresh.refused == []
    return sorted(o.info.path for o in refresh.offers)


def _store_is_whole(world: World) -> list[str]:
    if not world.store.exists():  # killed before the pull made it
        return []
    policy = load_policy(world.policy_path)
    installed = Store(world.store).installed()
    for key, path in installed.items():
        assert verify_image(path, policy).allowed, key
    for vo in (p for p in world.store.iterdir() if not p.name.startswith(".")):
        for name in vo.iterdir():
            for version in name.iterdir():
                assert f"{vo.name}/{name.name}/{version.name}" in installed, version
    return sorted(installed)


def test_kill_9_during_publish_never_breaks_the_catalog(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)  # noqa: S311 -- kill timing, not secrets
    rng = random.Random(seed)  # noqa: S311
    world = make_world(tmp_path)
    directory = str(world.catalog.directory)
    # How long a whole publish of 8 MiB takes here after "ready": kills land inside.
    scratch = _start("publish", directory, str(world.image("scratch", disk=os.urandom(8 << 20))))
    started = time.monotonic()
    assert _finish(scratch)["ok"]
    window = time.monotonic() - started
    published = ["atlas/scratch/1.0.json"]
    interrupted = 0
    round_ = 0
    # A new image every round, so every round can tell whether its kill left the
    # publish undone. Kills that come after the publish ended prove nothing: the
    # window shrinks whenever one does, and more rounds run until some kill has
    # landed inside a publish.
    while round_ < ROUNDS or (interrupted == 0 and round_ < 3 * ROUNDS):
        image = world.image(f"img{round_}", disk=os.urandom(8 << 20))
        name = f"atlas/img{round_}/1.0.json"
        if not _kill_at_random(_start("publish", directory, str(image)), rng, window):
            window /= 2
        paths = _catalog_verifies(world)
        assert set(published) <= set(paths), f"seed {seed}"
        interrupted += name not in paths
        outcome = _finish(_start("publish", directory, str(image)))
        assert outcome["ok"], (seed, outcome)
        published.append(name)
        assert set(published) <= set(_catalog_verifies(world)), f"seed {seed}"
        round_ += 1
    assert list(world.catalog.tmp_dir.iterdir()) == []
    assert not [p for p in world.catalog.directory.rglob("*.tmp") if p.is_file()]
    assert interrupted, f"seed {seed}: no kill landed inside a publish"


def test_kill_9_during_pull_never_shows_a_partial_image(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)  # noqa: S311 -- kill timing, not secrets
    rng = random.Random(seed)  # noqa: S311
    world = make_world(tmp_path)
    for i in range(3):
        world.publish(world.image(f"img{i}", disk=os.urandom(16 * 1024 * 1024)))
    args = (
        "pull",
        str(world.catalog.directory),
        str(world.catalog.metadata_dir / "root.json"),
        str(world.policy_path),
        str(world.store),
    )
    # How long a whole pull takes here after "ready" (into a scratch store): kills land inside.
    scratch = _start(*args[:-1], str(tmp_path / "scratch-store"))
    started = time.monotonic()
    assert _finish(scratch)["ok"]
    window = time.monotonic() - started
    partial_rounds = 0
    round_ = 0
    # Kills that come after the pull ended prove nothing: the window shrinks
    # whenever one does (a loaded machine's first pull is slower than the rest),
    # and more rounds run until some kill has landed inside a pull.
    while round_ < ROUNDS or (partial_rounds == 0 and round_ < 3 * ROUNDS):
        if round_ % 2 == 0:  # start again from an empty store every other round
            shutil.rmtree(world.store, ignore_errors=True)
        if not _kill_at_random(_start(*args), rng, window):
            window /= 2
        partial_rounds += len(_store_is_whole(world)) < 3
        round_ += 1
    outcome = _finish(_start(*args))
    assert outcome["ok"], (seed, outcome)
    assert _store_is_whole(world) == [f"atlas/img{i}/1.0" for i in range(3)]
    leftovers = [
        p.name
        for p in (world.store / ".pull").iterdir()
        if p.name.startswith(("staging-", "trash-"))
    ]
    assert leftovers == []
    assert partial_rounds, f"seed {seed}: no kill landed inside a pull"


def test_two_publishes_at_once_serialize(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    a = world.image("img-a", disk=os.urandom(8 * 1024 * 1024))
    b = world.image("img-b", disk=os.urandom(8 * 1024 * 1024))
    before = world.catalog.load().timestamp.signed.version
    procs = [_start("publish", str(world.catalog.directory), str(p)) for p in (a, b)]
    outcomes = [_finish(p) for p in procs]
    assert all(o["ok"] for o in outcomes), outcomes
    assert _catalog_verifies(world) == ["atlas/img-a/1.0.json", "atlas/img-b/1.0.json"]
    assert world.catalog.load().timestamp.signed.version == before + 2


def test_disk_full_during_publish_leaves_the_catalog_unchanged(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    image = world.image(disk=os.urandom(1024 * 1024))
    before = (world.catalog.metadata_dir / "timestamp.json").read_bytes()
    outcome = _finish(
        _start("--fsize", str(256 * 1024), "publish", str(world.catalog.directory), str(image))
    )
    assert outcome["ok"] is False
    assert outcome["code"] == "catalog-disk-full"
    assert "no space left" in str(outcome["error"])
    assert (world.catalog.metadata_dir / "timestamp.json").read_bytes() == before
    assert _catalog_verifies(world) == []
    assert list(world.catalog.tmp_dir.iterdir()) == []
    assert not list(world.catalog.images_dir.rglob("*.raw"))


def test_disk_full_during_pull_is_a_clear_error_and_the_store_stays_clean(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    world.publish(world.image(disk=os.urandom(1024 * 1024)))
    outcome = _finish(
        _start(
            "--fsize",
            str(256 * 1024),
            "pull",
            str(world.catalog.directory),
            str(world.catalog.metadata_dir / "root.json"),
            str(world.policy_path),
            str(world.store),
        )
    )
    assert outcome["ok"] is False
    assert outcome["type"] == "StoreError"
    assert "no space left" in str(outcome["error"])
    assert world.installed() == []
    assert list((world.store / ".pull" / "partial").iterdir()) == []
    world.pull()
    assert world.installed() == ["atlas/atlas-wn/1.0"]


def test_pull_from_a_directory_that_is_no_catalog_is_an_error(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    with pytest.raises(CatalogError) as err:
        world.pull(str(tmp_path / "missing"))
    assert err.value.code == "transport-not-found"
