"""Benchmark: the build stage against a bare diskimage-builder run.

Prints, for one recipe (default: the example), the wall time of

1. a bare ``disk-image-create`` of the same content (the same generated
   element and settings, tar output: what DIB alone does),
2. the full ``imagefactory build --no-cache --no-layer-cache`` (DIB + tree hardening + disk
   assembly + read-only audit + labels + digests + cache store + record; no
   boot test, which bare DIB has no equivalent of),
3. a cached rebuild of the unchanged recipe,

with the ratios. Goals: full/bare <= 1.3; cached rebuild < 2 s.

With ``--boot-test`` the comparison is end to end: bare ``disk-image-create``
plus a bare qemu boot of the same disk to the login prompt (the boot test's
own qemu command line, nothing around it) against ``imagefactory build
--no-cache --boot-test`` (goal <= 1.1x); the build's boot test runs
alongside its audit.

All runs share the debootstrap tarball cache (and the package-index cache);
when it is empty a warm-up run fills it first, so neither side pays for it;
the accelerator verdict (KVM or TCG, cached per host boot) is probed once
before the rounds, likewise. Bare and full runs alternate
``--rounds`` times and the fastest of each is compared (the machine is
shared and noisy: min-of-N); the full build's own step timings also show its
overhead beyond the DIB step. Needs root and the host packages (scripts/setup).

    .venv/bin/python bench/build.py [RECIPE] [--rounds N] [--boot-test]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from imagefactory.boot.qemu import DEFAULT_MARKER, qemu_argv
from imagefactory.builder import dib
from imagefactory.builder.context import BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.builder.pipeline import BuildResult, build
from imagefactory.builder.slots import cache_slot
from imagefactory.host.accel import choose_accel, choose_guest_accel
from imagefactory.host.appliance import fast_appliance
from imagefactory.mirrors import resolve_archive
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe, load_recipe
from imagefactory.run import run
from imagefactory.settings import Settings, load_settings
from imagefactory.vocab import BootMode

REPO = Path(__file__).resolve().parent.parent


def bare_dib(recipe: Recipe, settings: Settings, work: Path) -> float:
    """One plain disk-image-create of the recipe's element; seconds."""
    work.mkdir()
    base = recipe.base
    archive = resolve_archive(base.distro, base.release, base.arch, settings.mirrors)
    element = write_element(recipe, work / "elements")
    (work / dib.WORK_DIR_NAME).mkdir()
    # A slot of the image cache, as the build takes one: two DIB runs on one
    # cache (another build on this host) collide on apt's archive lock.
    with cache_slot(settings.dib_image_cache) as image_cache:
        call = dib.invocation(
            recipe,
            archive=archive,
            elements_path=element.root,
            element_name=element.name,
            output_dir=work,
            image_cache=image_cache,
            keyrings=dict(settings.keyrings),
        )
        started = time.monotonic()
        with (work / "dib.log").open("w") as log:
            run(call.argv, env=call.env, cwd=work, logfile=log)
        return time.monotonic() - started


def full_build(
    recipe: Recipe, settings: Settings, output: Path, *, use_cache: bool, boot_test: bool = False
) -> tuple[float, BuildResult]:
    """Seconds of one in-process ``imagefactory build``, and its result."""
    started = time.monotonic()
    # No layer: the layer is a cache of its own (bench/layered_build.py measures
    # it), and the same element in one DIB run is what bare DIB does.
    options = BuildOptions(
        use_cache=use_cache, use_layer=False, boot_test=boot_test, boot_timeout=900.0
    )
    result = build(recipe, settings, options, Progress(stream=io.StringIO()), output)
    return time.monotonic() - started, result


def bare_boot(recipe: Recipe, settings: Settings, disk: Path, work: Path) -> float:
    """One plain qemu boot of ``disk`` to the login prompt (the boot test's argv); seconds."""
    work.mkdir(exist_ok=True)
    arch = recipe.base.arch
    accel = choose_accel(settings.accel, arch.qemu_system, settings.cache_dir / "accel.json")
    marker = re.compile(DEFAULT_MARKER)
    fmt = disk.name.rsplit(".", 1)[1]
    started = time.monotonic()
    with (work / "console.log").open("w") as log:
        result = run(
            qemu_argv(disk, fmt, arch, accel),
            logfile=log,
            until=lambda text: marker.search(text) is not None,
            timeout=900,
            check=False,
        )
    if not result.stopped:
        raise SystemExit(f"bare qemu boot of {disk} did not reach the login prompt")
    return time.monotonic() - started


def report(  # noqa: PLR0917 -- one call, every figure the report prints
    recipe_name: str,
    rounds: int,
    bare: list[float],
    full: list[float],
    boots: list[float],
    t_cached: float,
    best: BuildResult,
) -> None:
    """Print both figures of every comparison, the ratio, the steps and every round."""
    steps: dict[str, float] = best.record["timings"]
    t_bare, t_full = min(bare), min(full)
    print(f"recipe: {recipe_name}; fastest of {rounds} alternating rounds (min-of-N)")
    print(f"{'bare disk-image-create':40s} {t_bare:8.1f} s   1.00x")
    if boots:
        t_boot = min(boots)
        base = t_bare + t_boot
        print(f"{'bare qemu boot to login (same disk)':40s} {t_boot:8.1f} s")
        print(f"{'bare DIB + bare boot (naive baseline)':40s} {base:8.1f} s   1.00x")
        print(
            f"{'imagefactory build --no-cache --boot-test':40s} {t_full:8.1f} s"
            f"   {t_full / base:.2f}x   (goal <= 1.10x)"
        )
        boot = best.record.get("boot_test") or {}
        print(
            f"its boot test ran alongside the audit: {boot.get('seconds')} s "
            f"({boot.get('accel')}); audit step {steps.get('audit', 0):.1f}s, "
            f"waited after label {steps.get('boot-test', 0):.1f}s"
        )
    else:
        print(
            f"{'imagefactory build --no-cache':40s} {t_full:8.1f} s   {t_full / t_bare:.2f}x"
            "   (goal <= 1.30x)"
        )
        print(
            f"{'imagefactory build (cached)':40s} {t_cached:8.2f} s   {t_cached / t_bare:.3f}x"
            "   (goal < 2 s)"
        )
    beyond = {k: v for k, v in steps.items() if k not in ("dib", "total") and v >= 0.05}
    print(
        "full build's steps beyond DIB: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in beyond.items())
        + f" (DIB step {steps.get('dib', 0):.1f}s)"
    )
    print(
        "rounds (s): bare "
        + ", ".join(f"{t:.1f}" for t in bare)
        + "; full "
        + ", ".join(f"{t:.1f}" for t in full)
        + ("; bare boot " + ", ".join(f"{t:.1f}" for t in boots) if boots else "")
    )


def bench_cache(cache: Path, host: Settings) -> Settings:
    """A cache directory of its own, with what a host keeps between builds made first
    (not timed): the download caches linked, the accelerator verdict, the appliance."""
    cache.mkdir()
    host.dib_image_cache.mkdir(parents=True, exist_ok=True)
    (cache / "dib").symlink_to(host.dib_image_cache)
    # The package-index cache (keyed by the indexes' digests), shared as DIB's
    # debootstrap tarball and apt archives are: a download cache, not results.
    indexes = host.cache_dir / "package-indexes"
    indexes.mkdir(parents=True, exist_ok=True)
    (cache / "package-indexes").symlink_to(indexes)
    settings = dataclasses.replace(host, cache_dir=cache)
    # The accelerator verdict is cached per host boot; a fresh cache would make
    # the first build alone wait out a KVM probe (up to 20 s) beside DIB.
    print("probing the accelerator once (not timed)...", file=sys.stderr)
    choose_guest_accel(settings.accel, cache / "accel.json")
    # The audit's appliance too: a host makes it once, not per build.
    fast_appliance(settings.appliance_dir)
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "recipe", nargs="?", type=Path, default=REPO / "recipes" / "atlas-wn-debian12.yaml"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/full runs")
    parser.add_argument(
        "--boot-test",
        action="store_true",
        help="end to end: bare DIB + bare qemu boot against build --boot-test",
    )
    args = parser.parse_args()
    host = load_settings(None)
    recipe = load_recipe(args.recipe, host.build_limits())
    if recipe.boot is not BootMode.BIOS and args.boot_test:
        raise SystemExit("--boot-test compares a BIOS boot; use a BIOS recipe")
    with tempfile.TemporaryDirectory(prefix="if-bench-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        settings = bench_cache(root / "cache", host)
        tarball = f"debootstrap-{recipe.base.distro}-{recipe.base.release}-"
        if not any(p.name.startswith(tarball) for p in host.dib_image_cache.iterdir()):
            print("warming the debootstrap cache (not timed)...", file=sys.stderr)
            bare_dib(recipe, settings, root / "warm-up")
        bare: list[float] = []
        boots: list[float] = []
        full: list[float] = []
        best: BuildResult | None = None
        for n in range(args.rounds):
            print(f"round {n + 1}: bare disk-image-create...", file=sys.stderr)
            bare.append(bare_dib(recipe, settings, root / f"bare{n}"))
            shutil.rmtree(root / f"bare{n}", ignore_errors=True)
            what = "--no-cache --boot-test" if args.boot_test else "--no-cache"
            print(f"round {n + 1}: imagefactory build {what}...", file=sys.stderr)
            seconds, result = full_build(
                recipe, settings, root / f"full{n}", use_cache=False, boot_test=args.boot_test
            )
            if not full or seconds < min(full):
                best = result
            full.append(seconds)
            if args.boot_test:
                print(f"round {n + 1}: bare qemu boot of the same disk...", file=sys.stderr)
                (disk,) = (result.directory / name for name in result.record["disk"]["files"])
                boots.append(bare_boot(recipe, settings, disk, root / f"boot{n}"))
            shutil.rmtree(root / f"full{n}", ignore_errors=True)
            # Each round as it ends: a long run cut short still says something.
            print(
                f"round {n + 1}: bare DIB {bare[-1]:.1f} s, build {full[-1]:.1f} s"
                + (f", bare boot {boots[-1]:.1f} s" if boots else ""),
                flush=True,
            )
        t_cached = 0.0
        if not args.boot_test:
            print("imagefactory build (cached)...", file=sys.stderr)
            t_cached, _ = full_build(recipe, settings, root / "cached", use_cache=True)
    assert best is not None
    report(args.recipe.name, args.rounds, bare, full, boots, t_cached, best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
