"""Benchmark: the build stage against a bare diskimage-builder run.

Prints, for one recipe (default: the example), the wall time of

1. a bare ``disk-image-create`` of the same content (the same generated
   element and settings, tar output: what DIB alone does),
2. the full ``imagefactory build --no-cache`` (DIB + disk assembly + digests +
   cache store + record; no boot test, which bare DIB has no equivalent of),
3. a cached rebuild of the unchanged recipe,

with the ratios. Goals: full/bare <= 1.3; cached rebuild < 2 s. All runs share
the debootstrap tarball cache; when it is empty a warm-up run fills it first,
so neither side pays for it. Bare and full runs alternate ``--rounds`` times
and the fastest of each is compared (this machine is noisy); the full build's
own step timings also show its overhead beyond the DIB step. Needs root and
the host packages (scripts/setup).

    .venv/bin/python bench/build.py [RECIPE] [--rounds N]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from imagefactory.builder import dib
from imagefactory.builder.context import BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.builder.pipeline import build
from imagefactory.mirrors import resolve_archive
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe, load_recipe
from imagefactory.run import run
from imagefactory.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def bare_dib(recipe: Recipe, settings: Settings, work: Path) -> float:
    """One plain disk-image-create of the recipe's element; seconds."""
    work.mkdir()
    base = recipe.base
    archive = resolve_archive(base.distro, base.release, base.arch, settings.mirrors)
    element = write_element(recipe, work / "elements")
    call = dib.invocation(
        recipe,
        archive=archive,
        elements_path=element.root,
        element_name=element.name,
        output_dir=work,
        image_cache=settings.dib_image_cache,
        keyrings=dict(settings.keyrings),
    )
    (work / dib.WORK_DIR_NAME).mkdir()
    started = time.monotonic()
    with (work / "dib.log").open("w") as log:
        run(call.argv, env=call.env, cwd=work, logfile=log)
    return time.monotonic() - started


def full_build(
    recipe: Recipe, settings: Settings, output: Path, *, use_cache: bool
) -> tuple[float, dict[str, float]]:
    """Seconds of one in-process ``imagefactory build``, and its step timings."""
    started = time.monotonic()
    options = BuildOptions(use_cache=use_cache)
    result = build(recipe, settings, options, Progress(stream=io.StringIO()), output)
    return time.monotonic() - started, result.record["timings"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "recipe", nargs="?", type=Path, default=REPO / "recipes" / "atlas-wn-debian12.yaml"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/full runs")
    args = parser.parse_args()
    host = load_settings(None)
    recipe = load_recipe(args.recipe, host.build_limits())
    with tempfile.TemporaryDirectory(prefix="if-bench-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        cache.mkdir()
        host.dib_image_cache.mkdir(parents=True, exist_ok=True)
        (cache / "dib").symlink_to(host.dib_image_cache)
        settings = dataclasses.replace(host, cache_dir=cache)
        tarball = f"debootstrap-{recipe.base.distro}-{recipe.base.release}-"
        if not any(p.name.startswith(tarball) for p in host.dib_image_cache.iterdir()):
            print("warming the debootstrap cache (not timed)...", file=sys.stderr)
            bare_dib(recipe, settings, root / "warm-up")
        bare: list[float] = []
        full: list[float] = []
        steps: dict[str, float] = {}
        for n in range(args.rounds):
            print(f"round {n + 1}: bare disk-image-create...", file=sys.stderr)
            bare.append(bare_dib(recipe, settings, root / f"bare{n}"))
            shutil.rmtree(root / f"bare{n}", ignore_errors=True)
            print(f"round {n + 1}: imagefactory build --no-cache...", file=sys.stderr)
            seconds, timings = full_build(recipe, settings, root / f"full{n}", use_cache=False)
            if not full or seconds < min(full):
                steps = timings
            full.append(seconds)
            shutil.rmtree(root / f"full{n}", ignore_errors=True)
        print("imagefactory build (cached)...", file=sys.stderr)
        t_cached, _ = full_build(recipe, settings, root / "cached", use_cache=True)
    t_bare, t_full = min(bare), min(full)
    print(f"recipe: {args.recipe.name}; fastest of {args.rounds} alternating rounds")
    print(f"{'bare disk-image-create':32s} {t_bare:8.1f} s   1.00x")
    print(
        f"{'imagefactory build --no-cache':32s} {t_full:8.1f} s   {t_full / t_bare:.2f}x"
        "   (goal <= 1.30x)"
    )
    print(
        f"{'imagefactory build (cached)':32s} {t_cached:8.2f} s   {t_cached / t_bare:.3f}x"
        "   (goal < 2 s)"
    )
    beyond = {k: v for k, v in steps.items() if k not in ("dib", "total") and v >= 0.05}
    print(
        "full build's steps beyond DIB: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in beyond.items())
        + f" (DIB step {steps.get('dib', 0):.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
