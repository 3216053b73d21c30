"""Benchmark the build cache's hit: what a cached rebuild of an unchanged recipe pays for its disk.

    PYTHONPATH=. .venv/bin/python bench/cached_build.py [--disk FILE] [--repeat 5]

Stores a disk (``--disk``; default: the largest disk in this host's build
cache, else a fresh 800 MiB file of random bytes) in a build cache in a
temporary directory under /var/tmp, then measures, alternating, best of
``--repeat`` each:

* the naive baseline: ``cp`` of the disk (what any copy of it costs);
* the previous hit: a sha256 of the stored disk, then
  ``cp --reflink=auto --sparse=always`` into the output;
* this hit: :meth:`BuildCache.lookup` (each file checked by its identity,
  not re-hashed) and :meth:`CacheEntry.materialize` (a reflink where the file
  system can, else an in-kernel sparse copy).

and, with ``--recipe``, one real ``imagefactory build`` of that recipe from
the host's cache (its step timings), which needs the recipe to have been
built with this very code. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagefactory.builder.cache import BuildCache, file_digest
from imagefactory.fsutil import MIB

REPO = Path(__file__).resolve().parent.parent


def default_disk(work: Path) -> Path:
    """The largest disk of the host's build cache, or a fresh 800 MiB random file."""
    from imagefactory.settings import load_settings

    builds = load_settings(None).cache_dir / "builds"
    disks = sorted(
        (p for p in builds.glob("*/*") if p.suffix in (".qcow2", ".raw")),
        key=lambda p: p.stat().st_size,
    )
    if disks:
        return disks[-1]
    disk = work / "disk.qcow2"
    with disk.open("wb") as stream:
        for _ in range(800):
            stream.write(os.urandom(MIB))
    return disk


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--recipe", type=Path, help="also one real cached build of RECIPE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="if-bench-cache-", dir="/var/tmp"))
    try:
        disk = args.disk or default_disk(work)
        cache = BuildCache(work / "cache")
        cache.store("k", {disk.name: disk}, {disk.name: file_digest(disk)}, {})
        stored = cache.root / "k" / disk.name
        out = work / "out"

        def fresh() -> Path:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return out

        def naive() -> None:
            subprocess.run(["cp", "--", str(stored), str(fresh() / disk.name)], check=True)

        def previous() -> None:
            file_digest(stored)
            cp = ["cp", "--reflink=auto", "--sparse=always", "--", str(stored)]
            subprocess.run([*cp, str(fresh() / disk.name)], check=True)

        def ours() -> None:
            entry = cache.lookup("k")
            assert entry is not None
            entry.materialize(fresh())

        naive()  # warm the page cache
        runs: dict[str, list[float]] = {"naive": [], "previous": [], "ours": []}
        for _ in range(args.repeat):
            for name, action in (("naive", naive), ("previous", previous), ("ours", ours)):
                runs[name].append(timed(action))
        t = {name: min(values) for name, values in runs.items()}
        size = disk.stat().st_size / MIB
        print(f"disk {disk.name}: {size:.0f} MiB; best of {args.repeat}, alternating")
        print(f"naive: cp of the disk:               {t['naive']:7.3f} s   1.00x")
        print(
            f"previous hit: sha256 + cp --reflink: {t['previous']:7.3f} s"
            f"   {t['previous'] / t['naive']:.2f}x"
        )
        print(
            f"this hit: lookup + materialize:      {t['ours']:7.3f} s"
            f"   {t['ours'] / t['naive']:.2f}x  ({t['previous'] / t['ours']:.1f}x faster)"
        )
        if args.recipe is not None:
            whole_build(args.recipe, work / "images")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def whole_build(recipe_file: Path, output: Path) -> None:
    """One cached ``build`` of ``recipe_file`` from the host's cache, in this process."""
    from imagefactory.builder.context import BuildOptions
    from imagefactory.builder.pipeline import build
    from imagefactory.progress import Progress
    from imagefactory.recipe import load_recipe
    from imagefactory.settings import load_settings

    settings = load_settings(None)
    recipe = load_recipe(recipe_file, settings.build_limits())
    start = time.perf_counter()
    result = build(recipe, settings, BuildOptions(), Progress(stream=io.StringIO()), output)
    seconds = time.perf_counter() - start
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in result.record["timings"].items())
    hit = "hit" if result.cache_hit else "MISS (built afresh)"
    print(f"imagefactory build {recipe_file.name} (cache {hit}): {seconds:.2f} s; {steps}")


if __name__ == "__main__":
    sys.exit(main())
