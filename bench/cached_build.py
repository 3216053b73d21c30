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

and, with ``--recipe``, real cached ``imagefactory build`` runs of that
recipe (see :func:`whole_build`), with their step timings: in this process
into a fresh output and into the output it made, then as a whole process
(the no-change rebuild a user runs; goal < 0.5 s) against the bare
interpreter start-up. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
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
            whole_build(args.recipe, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def whole_build(recipe_file: Path, work: Path) -> None:
    """Real cached ``build`` runs of ``recipe_file``, in this process, from a seeded cache.

    The cache key covers this code, so the host's cache rarely holds this code's
    entry. The newest host entry of the same recipe is copied into a private
    cache under this code's key (its files are a finished build of the recipe:
    the same work for a hit), hit once so it records its identities, then
    timed: a rebuild into a fresh output (one copy of the disk) and a rebuild
    into the output it made (its files' identities unchanged: nothing copied),
    then :func:`as_a_process`.
    """
    import dataclasses

    from imagefactory.builder import pipeline
    from imagefactory.builder.context import BuildContext, BuildOptions
    from imagefactory.progress import Progress
    from imagefactory.recipe import load_recipe
    from imagefactory.settings import load_settings

    host = load_settings(None)
    recipe = load_recipe(recipe_file, host.build_limits())
    entries = [
        p.parent
        for p in (host.cache_dir / "builds").glob("*/entry.json")
        if json.loads(p.read_text()).get("record", {}).get("image", {}).get("name") == recipe.name
    ]
    if not entries:
        print(f"no entry of {recipe.name} in {host.cache_dir}: build it once first")
        return
    source = max(entries, key=lambda p: p.stat().st_mtime)
    settings = dataclasses.replace(host, cache_dir=work / "host-cache")
    staging = work / "key"
    staging.mkdir()
    ctx = BuildContext(
        recipe=recipe,
        settings=settings,
        options=BuildOptions(use_cache=False),
        progress=Progress(stream=io.StringIO()),
        staging=staging,
        logfile=io.StringIO(),
    )
    for step in pipeline.STEPS[:4]:  # host, archive, element, cache: this code's key
        step.run(ctx)
    seeded = settings.cache_dir / "builds" / ctx.key
    shutil.copytree(source, seeded)
    meta = json.loads((seeded / "entry.json").read_text())
    meta["key"] = ctx.key
    (seeded / "entry.json").write_text(json.dumps(meta))
    output = work / "images"
    runs = (
        ("warm-up (into a fresh output: one copy)", True),
        ("into a fresh output (one copy of the disk)", True),
        ("into the output it made (identities unchanged: nothing copied)", False),
    )
    for name, fresh in runs:
        if fresh:
            shutil.rmtree(output, ignore_errors=True)
        start = time.perf_counter()
        result = pipeline.build(
            recipe, settings, BuildOptions(), Progress(stream=io.StringIO()), output
        )
        seconds = time.perf_counter() - start
        assert result.cache_hit, "the seeded entry was not hit"
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in result.record["timings"].items())
        print(f"in process, cached, {name}: {seconds:.3f} s ({steps})")
    as_a_process(recipe_file, settings.cache_dir, output, work)


def as_a_process(recipe_file: Path, cache_dir: Path, output: Path, work: Path) -> None:
    """The no-change rebuild as a user runs it: ``imagefactory build`` as a whole process
    (interpreter start-up, imports, settings, recipe, every step), best of 5, into the
    output that already holds it, against the bare interpreter start-up."""
    settings_file = work / "settings.yaml"
    settings_file.write_text(json.dumps({"build": {"cache_dir": str(cache_dir)}}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    argv = [sys.executable, "-m", "imagefactory", "--settings", str(settings_file), "build"]
    argv += [str(recipe_file), "--output", str(output), "--json"]

    def once(command: list[str]) -> float:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout.decode()}")
        return seconds

    bare = [sys.executable, "-c", "pass"]
    once(argv)  # writes the byte code once, as any installed copy has it
    build_runs, bare_runs = [], []
    for _ in range(5):
        build_runs.append(once(argv))
        bare_runs.append(once(bare))
    result = json.loads(
        subprocess.run(argv, cwd=REPO, env=env, capture_output=True, check=True).stdout
    )
    assert result["cache_hit"], result
    assert not result["published"], result  # up to date: the output kept as it is
    t_build, t_bare = min(build_runs), min(bare_runs)
    print(f"python -c pass (interpreter start-up):  {t_bare:7.3f} s")
    print(
        f"imagefactory build (a process, no change): {t_build:7.3f} s  (goal < 0.5 s; "
        f"{t_build / t_bare:.1f}x the bare start-up; runs "
        + ", ".join(f"{t:.3f}" for t in build_runs)
        + ")"
    )
    steps = ", ".join(f"{k} {v:.3f}s" for k, v in result["timings"].items())
    print(f"  its steps: {steps}")


if __name__ == "__main__":
    sys.exit(main())
