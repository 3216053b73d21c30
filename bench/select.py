"""Benchmark ``select`` over stores of 10, 100 and 1,000 images.

    PYTHONPATH=. .venv/bin/python bench/select.py [--sizes 10,100,1000] [--runs 5]

Each store has the real layout (``STORE/<vo>/<name>/<version>/``, files 0444),
real labels.json files (the tests' fake image directories, spread over 20
VOs, both distros, three arches), the pull state that records every image
as installed, and a verified-cache entry per image under the policy (what
pull writes after verifying; the images themselves are not signed, since
what is timed is select, not verify). Timed, per size, in this one run:

* ``select`` in-process (policy loaded once, as a long-running caller would),
  as a prologue asks (the verified-cache check only until an image passes)
  and with ``--explain`` (every image checked completely);
* ``imagefactory select`` as a process (what a batch prologue pays);
* the naive baseline: every labels.json read with ``json.load`` in a loop and
  the same equality tests applied, nothing else checked.

Prints the time per size, select/naive, and the growth from 100 to 1,000
images (10x the images: a ratio near 10 is linear). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagefactory.select.choose import STORE_CACHE, select_image
from imagefactory.select.requirements import parse_requirements
from imagefactory.store.layout import Store, StoreState, rmtree_readonly
from imagefactory.trust import load_policy
from imagefactory.verify.cache import VerifiedCache, image_key
from imagefactory.verify.verdict import Verdict
from tests.fakes.imagedirs import key_signer, make_image, new_key, vo_rules, write_policy

VOS = [f"vo{i:02d}" for i in range(20)]
FLAVOURS = [
    ("debian", "12", "bookworm", "x86_64"),
    ("debian", "13", "trixie", "x86_64"),
    ("debian", "12", "bookworm", "aarch64"),
    ("ubuntu", "22.04", "jammy", "x86_64"),
    ("ubuntu", "24.04", "noble", "x86_64"),
    ("debian", "12", "bookworm", "i386"),
]
REQUIRE = "distro=debian,release>=12,arch=x86_64,vo=vo03,root_policy=none"
WANT = {"os.distro": "debian", "os.arch": "x86_64", "vo": "vo03", "trust.root_policy": "none"}


def edit_for(index: int) -> Any:
    vo = VOS[index % len(VOS)]
    distro, release, codename, arch = FLAVOURS[(index // len(VOS)) % len(FLAVOURS)]
    now = datetime.now(UTC)

    def edit(labels: dict[str, Any]) -> None:
        labels["image"].update(
            name=f"wn-{index}",
            version=f"1.{index % 7}",
            created=(now - timedelta(hours=index % 500)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            expires=(now + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        labels["vo"] = [vo]
        labels["os"].update(distro=distro, version=release, codename=codename, arch=arch)

    return edit


def build_store(root: Path, size: int, policy_path: Path) -> Path:
    store = Store(root / f"store-{size}")
    store.create()
    policy = load_policy(policy_path)
    cache = VerifiedCache(store.directory / STORE_CACHE)
    state = StoreState()
    now = datetime.now(UTC)
    entries: list[tuple[str, Path]] = []
    for index in range(size):
        edit = edit_for(index)
        labels: dict[str, Any] = {"image": {}, "os": {}}
        edit(labels)
        vo, name, version = labels["vo"][0], labels["image"]["name"], labels["image"]["version"]
        key = f"{vo}/{name}/{version}"
        parent = store.directory / vo / name
        path = make_image(parent, version, edit=edit, disk=os.urandom(4096))
        Store.seal(path)
        os.chmod(path, 0o555)
        state.images[key] = {"descriptor": "0" * 64, "installed": now.isoformat()}
        entries.append((key, path))
    store.save_state(state)
    for _key, path in entries:
        found = image_key(path, policy)
        assert found is not None
        verdict = Verdict(path, steps=["bench"], valid_until=now + timedelta(days=20))
        cache.store(found, verdict, now)
    return store.directory


def naive(store: Path) -> str | None:
    """Read every labels.json and apply the equality tests: what select is compared with."""
    best: tuple[str, str] | None = None
    for labels_path in sorted(store.glob("*/*/*/labels.json")):
        with labels_path.open() as stream:
            labels = json.load(stream)
        if (
            labels["os"]["distro"] == WANT["os.distro"]
            and labels["os"]["arch"] == WANT["os.arch"]
            and WANT["vo"] in labels["vo"]
            and labels["trust"]["root_policy"] == WANT["trust.root_policy"]
            and int(labels["os"]["version"].split(".")[0]) >= 12
        ):
            created = labels["image"]["created"]
            if best is None or created > best[0]:
                best = (created, str(labels_path.parent))
    return best[1] if best else None


def timed(fn: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(
    store: Path, policy: Any, requirements: Any, argv: list[str], runs: int
) -> dict[str, float]:
    return {
        "in-process": timed(lambda: select_image(store, policy, requirements, explain=False), runs),
        "explain": timed(lambda: select_image(store, policy, requirements, explain=True), runs),
        "process": timed(
            lambda: subprocess.run(argv, check=True, capture_output=True), max(3, runs // 2)
        ),
        "naive": timed(lambda: naive(store), runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="if-bench-select-", dir="/var/tmp"))
    try:
        key = new_key(work, "site")
        policy_path = write_policy(
            work / "site.yaml", {vo: vo_rules(key_signer(f"{vo}-key", key)) for vo in VOS}
        )
        exe = str(Path(sys.executable).with_name("imagefactory"))
        results: dict[int, dict[str, float]] = {}
        for size in sizes:
            start = time.perf_counter()
            store = build_store(work, size, policy_path)
            print(f"store of {size} images made in {time.perf_counter() - start:.1f} s", flush=True)
            policy = load_policy(policy_path)
            requirements = parse_requirements([REQUIRE], sorted(policy.vos))
            chosen = select_image(store, policy, requirements).chosen
            expected = naive(store)
            assert chosen is not None
            if str(chosen.path) != expected:
                print(f"  note: select chose {chosen.path}, the naive loop {expected}")
            argv = [exe, "select", "--store", str(store), "--policy", str(policy_path)]
            argv += ["--require", REQUIRE]
            results[size] = measure(store, policy, requirements, argv, args.runs)
        print()
        print(
            f"{'images':>7} {'select ms':>10} {'--explain ms':>13} {'process ms':>11}"
            f" {'naive ms':>9} {'select/naive':>13}"
        )
        for size, r in results.items():
            print(
                f"{size:>7} {r['in-process'] * 1000:>10.1f} {r['explain'] * 1000:>13.1f}"
                f" {r['process'] * 1000:>11.1f} {r['naive'] * 1000:>9.1f}"
                f" {r['in-process'] / r['naive']:>13.1f}"
            )
        if 100 in results and 1000 in results:
            print()
            for what in ("in-process", "explain", "process", "naive"):
                ratio = results[1000][what] / results[100][what]
                print(f"growth 100 -> 1000 images ({what}): x{ratio:.1f}")
    finally:
        rmtree_readonly(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
