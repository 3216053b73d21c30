"""Benchmark: harden + audit + label against a bare libguestfs launch + inspect_os.

    PYTHONPATH=. .venv/bin/python bench/harden.py IMAGE.qcow2 [--recipe RECIPE.yaml]
        [--rounds N] [--calls]

The image is copied to a temporary directory first (the original is never
written), and its root file system is unpacked once into an OS tree (not
timed: diskimage-builder hands the build that tree). Each round, alternating,
times

1. a bare libguestfs launch + ``inspect_os`` of the image (the baseline),
   booting the appliance the build's audit boots (imagefactory's fixed
   appliance, :mod:`imagefactory.host.appliance`, with the audit's vCPUs), so
   the ratio is the work and not the appliance; and the same bare launch of
   libguestfs's own appliance with one vCPU (what a plain libguestfs program
   gets, printed beside it),
2. what the build does: the hardening of the OS tree on the host
   (:class:`~imagefactory.guest.tree.HostTree`, no appliance), then one
   read-only launch for the audit and the label facts of the finished disk
   (the image given: making the disk from the tree is the assembly's
   ``mkfs``, not timed here), then the labels and SBOM (goal: within 1.5x of
   the baseline),
3. the same work done the naive way, as the build did before: a writable
   libguestfs launch that hardens the disk, then the read-only audit launch
   and the labels,

and prints the fastest of each (min-of-N: the machine is shared and noisy)
with the ratios. Timings are printed, never asserted: the test suite has no
timed assertions. ``--calls`` also prints, per phase, how often each
libguestfs call was made and the time spent in it.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import functools
import os
import shutil
import sys
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
from imagefactory.guest.tree import HostTree
from imagefactory.harden.apply import apply_profile
from imagefactory.host.accel import choose_guest_accel
from imagefactory.host.appliance import fast_appliance
from imagefactory.labels.make import DiskFacts, disk_digests, make_labels
from imagefactory.profiles import Profile, load_profile
from imagefactory.recipe import DEFAULT_LIMITS, Recipe, load_recipe
from imagefactory.run import run
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


@dataclasses.dataclass(frozen=True)
class Launch:
    """How the build's audit launches its appliance (``appliance`` None: libguestfs's own)."""

    accel: str
    smp: int
    appliance: Path | None


def bare(image: Path, fmt: str, launch: Launch) -> float:
    started = time.monotonic()
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend(BACKEND)
    if launch.accel == "tcg":
        g.set_backend_settings(["force_tcg"])
    if launch.smp > 1:
        g.set_smp(launch.smp)
    if launch.appliance is not None:
        g.set_path(str(launch.appliance))
    g.set_network(False)
    g.add_drive_opts(str(image), format=fmt, readonly=1)
    g.launch()
    g.inspect_os()
    g.close()
    return time.monotonic() - started


def unpack_tree(image: Path, fmt: str, accel: str, tree: Path) -> None:
    """The image's root file system as an OS tree on the host (owners, modes, xattrs)."""
    tar = tree.parent / "tree.tar"
    with open_guest(image, fmt, readonly=True, accel=accel) as guest:
        guest.g.tar_out("/", str(tar), numericowner=True, xattrs=True, acls=True)
    tree.mkdir()
    run(["tar", "-x", "-f", str(tar), "-C", str(tree), "--numeric-owner", "-p", "--xattrs"])
    tar.unlink()


def audit_and_label(
    image: Path,
    fmt: str,
    *,
    launch: Launch,
    recipe: Recipe,
    profile: Profile,
    phases: dict[str, float],
    prefix: str,
) -> bool:
    """The audit launch and the labels, as the build's audit and label steps; passed?"""
    started = time.monotonic()
    info = check_safe(image, declared_format=fmt)
    with open_guest(
        image,
        fmt,
        readonly=True,
        accel=launch.accel,
        smp=launch.smp,
        appliance=launch.appliance,
    ) as guest:
        phases[f"{prefix}audit: launch"] = guest.launch_seconds
        mark = time.monotonic()
        report = run_audit(guest, profile, recipe.root_policy)
        phases[f"{prefix}audit: checks"] = time.monotonic() - mark
        mark = time.monotonic()
        facts, packages, mode = os_facts(guest), package_facts(guest), boot_mode(guest)
        phases[f"{prefix}audit: facts"] = time.monotonic() - mark
    phases[f"{prefix}audit"] = time.monotonic() - started

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
    phases[f"{prefix}label"] = time.monotonic() - started
    return report.passed


def harden_tree(pristine: Path, tree: Path, profile: Profile, recipe: Recipe) -> float:
    """Seconds to harden a fresh copy of the pristine tree, as the build's harden step."""
    run(["cp", "-a", "--reflink=auto", str(pristine), str(tree)])
    started = time.monotonic()
    with HostTree(tree) as host_tree:
        apply_profile(host_tree, profile, recipe.root_policy)
    seconds = time.monotonic() - started
    run(["rm", "-rf", "--one-file-system", str(tree)])
    return seconds


def print_round(n: int, phases: dict[str, float]) -> None:
    """One round's three figures as soon as it ends (a long run can be cut short)."""
    ours = phases["harden (tree)"] + phases["audit"] + phases["label"]
    naive = phases["naive: harden (disk)"] + phases["naive: audit"] + phases["naive: label"]
    print(
        f"round {n + 1}: bare {phases['bare']:.1f} s, ours {ours:.1f} s "
        f"({ours / phases['bare']:.2f}x), naive {naive:.1f} s ({naive / phases['bare']:.2f}x)",
        flush=True,
    )


def report(
    image_name: Path, fmt: str, accel: str, passed: dict[str, bool], rounds: list[dict[str, float]]
) -> None:
    """Both figures of each comparison, with the ratios; each phase's fastest time."""

    def best(name: str) -> float:
        return min(r[name] for r in rounds)

    ours = min(r["harden (tree)"] + r["audit"] + r["label"] for r in rounds)
    naive_total = min(
        r["naive: harden (disk)"] + r["naive: audit"] + r["naive: label"] for r in rounds
    )
    t_bare = best("bare")
    print(
        f"image {image_name} ({fmt}, accel {accel}); audit passed: {passed}; "
        f"fastest of {len(rounds)} alternating rounds (min-of-N)"
    )
    print(f"{'bare launch + inspect_os':34s}{t_bare:7.1f} s   1.00x  (the build's appliance)")
    t_own = best("bare, libguestfs's own appliance")
    print(
        f"{'  the same, libguestfs own, 1 vCPU':34s}{t_own:7.1f} s   {t_own / t_bare:.2f}x"
        "  (a plain libguestfs program)"
    )
    for name in rounds[0]:
        if not name.startswith("bare"):
            print(f"  {name:<32}{best(name):7.1f} s")
    print(
        f"{'harden (tree) + audit + label':34s}{ours:7.1f} s   {ours / t_bare:.2f}x  (goal <= 1.5x)"
    )
    print(
        f"{'naive: harden (disk) + audit + label':34s}{naive_total:7.1f} s   "
        f"{naive_total / t_bare:.2f}x  (two launches, as the build did before)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", type=Path)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/site-base-debian12.yaml"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--calls", action="store_true", help="count and time libguestfs calls")
    args = parser.parse_args()
    if args.calls:
        time_calls()
    recipe = load_recipe(args.recipe, DEFAULT_LIMITS)
    profile = load_profile(recipe.hardening)
    settings = load_settings()
    accel = choose_guest_accel(settings.accel, settings.cache_dir / "accel.json")
    # As the build's audit step: its appliance, two vCPUs on two cores or more.
    appliance = fast_appliance(settings.appliance_dir, lambda s: print(s, file=sys.stderr))
    launch = Launch(accel, min(2, os.cpu_count() or 1), appliance)
    own = Launch(accel, 1, None)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-harden-", dir="/var/tmp") as tmp:
        image = Path(tmp) / args.image.name
        shutil.copyfile(args.image, image)
        fmt = check_safe(image).format
        print("unpacking the image's tree (not timed)...", file=sys.stderr)
        pristine = Path(tmp) / "pristine"
        pristine.mkdir()
        unpack_tree(image, fmt, accel, pristine / "tree")
        passed: dict[str, bool] = {}
        for n in range(args.rounds):
            print(f"round {n + 1}...", file=sys.stderr)
            phases: dict[str, float] = {}
            PHASE[0] = "bare"
            phases["bare"] = bare(image, fmt, launch)
            phases["bare, libguestfs's own appliance"] = bare(image, fmt, own)

            PHASE[0] = "tree"
            phases["harden (tree)"] = harden_tree(pristine / "tree", Path(tmp) / f"tree{n}",
                                                  profile, recipe)  # fmt: skip
            PHASE[0] = "audit"
            passed["build"] = audit_and_label(
                image, fmt, launch=launch, recipe=recipe, profile=profile, phases=phases, prefix=""
            )

            naive = Path(tmp) / f"naive{n}.{fmt}"
            shutil.copyfile(args.image, naive)
            PHASE[0] = "naive"
            started = time.monotonic()
            with open_guest(
                naive,
                fmt,
                readonly=False,
                accel=accel,
                smp=launch.smp,
                appliance=launch.appliance,
            ) as guest:
                phases["naive: harden launch"] = guest.launch_seconds
                apply_profile(guest, profile, recipe.root_policy)
            phases["naive: harden (disk)"] = time.monotonic() - started
            passed["naive"] = audit_and_label(
                naive,
                fmt,
                launch=launch,
                recipe=recipe,
                profile=profile,
                phases=phases,
                prefix="naive: ",
            )
            naive.unlink()
            rounds.append(phases)
            print_round(n, phases)

    report(args.image, fmt, accel, passed, rounds)
    if args.calls:
        print_calls()


if __name__ == "__main__":
    main()
