"""Benchmark: harden + audit + label against a bare libguestfs launch + inspect_os.

    PYTHONPATH=. .venv/bin/python bench/harden.py IMAGE.qcow2 [--recipe RECIPE.yaml] [--calls]

The image is copied to a temporary directory first (the original is never
written). Prints each phase's time and the ratio (goal: within 1.5x). Timings
are printed, never asserted: the test suite has no timed assertions.
``--calls`` also prints, per phase, how often each libguestfs call was made and
the time spent in it (to see where the appliance round trips go).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import guestfs

from imagefactory.audit import run_audit
from imagefactory.diskformat import check_safe
from imagefactory.guest.facts import os_facts, package_facts
from imagefactory.guest.handle import BACKEND, boot_mode, open_guest
from imagefactory.harden.apply import apply_profile
from imagefactory.host.accel import choose_guest_accel
from imagefactory.labels.make import DiskFacts, disk_digests, make_labels
from imagefactory.profiles import load_profile
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.sbom import make_sbom, sbom_ref
from imagefactory.settings import load_settings

#: (phase, call) -> [count, seconds], filled when --calls wraps the binding.
CALLS: collections.defaultdict[tuple[str, str], list[float]] = collections.defaultdict(
    lambda: [0, 0.0]
)
PHASE = ["bare"]


def _timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            row = CALLS[(PHASE[0], name)]
            row[0] += 1
            row[1] += time.monotonic() - started

    return timed


def time_calls() -> None:
    """Wrap every public GuestFS method so each call is counted and timed."""
    for name in dir(guestfs.GuestFS):
        method = getattr(guestfs.GuestFS, name)
        if not name.startswith("_") and callable(method):
            setattr(guestfs.GuestFS, name, _timed(name, method))


def print_calls() -> None:
    print("libguestfs calls (phase, call, count, seconds; >= 0.05 s):")
    for (phase, name), (count, seconds) in sorted(CALLS.items(), key=lambda kv: -kv[1][1]):
        if seconds >= 0.05:
            print(f"  {phase:<8}{name:<24}{int(count):6d}{seconds:8.2f} s")


def bare(image: Path, fmt: str, accel: str) -> float:
    started = time.monotonic()
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend(BACKEND)
    if accel == "tcg":
        g.set_backend_settings(["force_tcg"])
    g.set_network(False)
    g.add_drive_opts(str(image), format=fmt, readonly=1)
    g.launch()
    g.inspect_os()
    g.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", type=Path)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/site-base-debian12.yaml"))
    parser.add_argument("--calls", action="store_true", help="count and time libguestfs calls")
    args = parser.parse_args()
    if args.calls:
        time_calls()
    recipe = load_recipe(args.recipe, DEFAULT_LIMITS)
    profile = load_profile(recipe.hardening)
    settings = load_settings()
    accel = choose_guest_accel(settings.accel, settings.cache_dir / "accel.json")
    with tempfile.TemporaryDirectory(prefix="bench-harden-") as tmp:
        image = Path(tmp) / args.image.name
        shutil.copyfile(args.image, image)
        fmt = check_safe(image).format
        t_bare = bare(image, fmt, accel)

        phases: dict[str, float] = {}
        PHASE[0] = "harden"
        started = time.monotonic()
        with open_guest(image, fmt, readonly=False, accel=accel) as guest:
            phases["harden: launch"] = guest.launch_seconds
            apply_profile(guest, profile, recipe.root_policy)
        phases["harden"] = time.monotonic() - started

        PHASE[0] = "audit"
        started = time.monotonic()
        info = check_safe(image, declared_format=fmt)
        with open_guest(image, fmt, readonly=True, accel=accel) as guest:
            phases["audit: launch"] = guest.launch_seconds
            mark = time.monotonic()
            report = run_audit(guest, profile, recipe.root_policy)
            phases["audit: checks"] = time.monotonic() - mark
            mark = time.monotonic()
            facts, packages, mode = os_facts(guest), package_facts(guest), boot_mode(guest)
            phases["audit: facts"] = time.monotonic() - mark
        phases["audit"] = time.monotonic() - started

        started = time.monotonic()
        sha256, sha512 = disk_digests(image)
        created = dt.datetime.now(dt.UTC)
        sbom = make_sbom(
            recipe.name,
            recipe.version,
            facts,
            packages.packages,
            disk_sha256=sha256,
            created=created,
        )
        disk = DiskFacts(image.name, fmt, info.file_size, info.virtual_size, sha256, sha512, mode)
        make_labels(
            recipe,
            disk=disk,
            os=facts,
            packages=packages,
            sbom=sbom_ref(sbom),
            audit=report,
            profile=profile,
            builder={"imagefactory": "bench", "libguestfs": "bench"},
            created=created,
        )
        phases["label"] = time.monotonic() - started

    total = phases["harden"] + phases["audit"] + phases["label"]
    print(f"image {args.image} ({fmt}, accel {accel}); audit passed: {report.passed}")
    print(f"bare launch + inspect_os      {t_bare:7.1f} s")
    for name, seconds in phases.items():
        print(f"{name:<30}{seconds:7.1f} s")
    print(f"harden + audit + label        {total:7.1f} s")
    print(f"ratio                         {total / t_bare:7.2f}x  (goal <= 1.5x)")
    if args.calls:
        print_calls()


if __name__ == "__main__":
    main()
