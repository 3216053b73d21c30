"""Benchmark pull: throughput against a plain download of the same file, and an unchanged pull.

    PYTHONPATH=. .venv/bin/python bench/pull.py [--size-mib 1024] [--repeat 3]

Publishes one signed image with a non-sparse raw disk into a catalog in a
temporary directory under /var/tmp, serves the catalog from a static HTTP server on
127.0.0.1 (``tests/store/httpserver.py``, a child process), then measures in
the same run, best of ``--repeat`` alternating rounds each (each round in a
rotated order, each kind after an untimed ``sync``), with a warm page cache:

* baseline: ``urllib`` download of the disk from the same server into a file
  on the same file system, hashing sha256 while it streams ("hash included");
* the transfer step of pull alone (:func:`imagefactory.store.transport.download`:
  capped at the signed length, sha256 while it streams, fsync);
* a whole ``pull`` into an empty store: TUF refresh, transfer, the full
  ``verify`` of the staged image (which takes the disk's digest from the
  transfer instead of reading it again), the rename into the store;
* a ``pull`` of the unchanged catalog: image bytes transferred, metadata bytes
  and time.

Prints figures and ratios (best of each kind, then the ratio within each round
and its median, the load average, and this process's CPU seconds per kind);
asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.verify import make_image
from imagefactory.attest.keys import generate_key, load_signer
from imagefactory.attest.sign import sign_with_key
from imagefactory.catalog.descriptor import parse_descriptor
from imagefactory.catalog.publish import publish
from imagefactory.catalog.repo import Catalog
from imagefactory.store.pull import PullOptions, PullResult, pull
from imagefactory.store.transport import Source, download
from imagefactory.trust import load_policy

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_download(url: str, dest: Path, sync: bool = False) -> None:
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:  # noqa: S310
        while chunk := response.read(MiB):
            sha.update(chunk)
            out.write(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    dest.unlink()


def measure(
    actions: Mapping[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds and this process's CPU seconds of each action, round by round."""
    runs: dict[str, list[float]] = {name: [] for name in actions}
    cpu: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for round_ in range(repeat):
        # Each round in another order, and every kind from clean page-cache writeback:
        # a kind run right after "plain" would otherwise pay for its dirty gigabyte.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            os.sync()
            used = resource.getrusage(resource.RUSAGE_SELF)
            runs[name].append(best(1, actions[name]))
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu[name].append(after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime)
    return runs, cpu


def setup(work: Path, size: int) -> tuple[Path, bytes, Path]:
    """A catalog with one signed image of ``size`` bytes: (catalog dir, root, policy file)."""
    image = make_image(work, size)
    key = generate_key(work / "key")
    sign_with_key(image, load_signer(str(key.private)))
    policy_file = work / "site.yaml"
    policy_file.write_text(
        f"vos:\n  bench:\n    signers:\n      - name: bench\n        key: {key.public}\n"
    )
    catalog = Catalog(work / "catalog")
    root = catalog.init().read_bytes()
    publish(catalog, image)
    return catalog.directory, root, policy_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="if-bench-pull-", dir="/var/tmp"))
    server = None
    try:
        print(f"making and publishing a {args.size_mib} MiB signed image in {work} ...")
        catalog_dir, root, policy_file = setup(work, size)
        policy = load_policy(policy_file)
        [(_, info)] = list(Catalog(catalog_dir).load().all_targets())
        disk = parse_descriptor(Catalog(catalog_dir).read_target(info), info.path).disk
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.store.httpserver", str(catalog_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        base = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        url = f"{base}/{disk.path}"
        scratch = work / "scratch"
        scratch.mkdir()
        plain_download(url, scratch / "warm")

        def transfer() -> None:
            part = scratch / "part"
            sha256 = {"sha256": disk.hashes["sha256"]}  # what pull checks on the wire for a disk
            download(Source.parse(base), disk.path, part, disk.length, hashes=sha256)
            part.unlink()

        def whole() -> None:
            store = work / "store"
            shutil.rmtree(store, ignore_errors=True)
            result = pull(base, root, policy, store, PullOptions())
            assert result.by_action("installed") == ["bench/bench/1"], result.to_dict()

        # Alternating rounds, the best of each: this machine is shared and its load
        # changes by the second; a block of one kind would catch a quiet or busy spell.
        # Each round rotates the order, and syncs (untimed) before each kind.
        actions = {
            "plain": lambda: plain_download(url, scratch / "plain"),
            "synced": lambda: plain_download(url, scratch / "plain", sync=True),
            "ours": transfer,
            "full": whole,
        }
        load_before = os.getloadavg()
        runs, cpu = measure(actions, args.repeat)
        load_after = os.getloadavg()
        baseline, synced, ours, full = (min(runs[n]) for n in actions)
        start = time.perf_counter()
        again = pull(base, root, policy, work / "store", PullOptions())
        unchanged = time.perf_counter() - start

        times = {
            "plain": baseline,
            "synced": synced,
            "ours": ours,
            "full": full,
            "unchanged": unchanged,
        }
        report(args.size_mib, args.repeat, times, again)
        report_pairs(runs, cpu, load_before, load_after)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(size_mib: int, repeat: int, t: dict[str, float], again: PullResult) -> None:
    """Print the figures; ``t``: best seconds of each measurement."""
    mib = float(size_mib)
    print(f"cpus: {os.cpu_count()}, disk {size_mib} MiB, best of {repeat}")
    print(f"plain urllib download + sha256:  {t['plain']:7.3f} s {mib / t['plain']:7.0f} MiB/s")
    print(f"plain download + sha256 + fsync: {t['synced']:7.3f} s {mib / t['synced']:7.0f} MiB/s")
    print(f"pull transfer (sha256):          {t['ours']:7.3f} s {mib / t['ours']:7.0f} MiB/s")
    print(f"  ratio transfer/plain: {t['plain'] / t['ours']:.2f}x  (goal >= 0.9x)")
    print(f"  ratio transfer/plain with fsync: {t['synced'] / t['ours']:.2f}x")
    print(
        f"whole pull (refresh+transfer+verify+install): {t['full']:7.3f} s"
        f" {mib / t['full']:7.0f} MiB/s"
    )
    print(f"  ratio whole pull/plain: {t['plain'] / t['full']:.2f}x  (goal >= 0.9x)")
    print(f"  ratio whole pull/plain with fsync: {t['synced'] / t['full']:.2f}x")
    print(
        f"unchanged catalog pull: {again.image_bytes} image bytes,"
        f" {again.metadata_bytes} metadata bytes, {t['unchanged'] * 1000:.0f} ms"
    )


def report_pairs(
    runs: dict[str, list[float]],
    cpu: dict[str, list[float]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    """Each round's ratios, plain time over ours, and this process's CPU seconds per kind.

    On a shared machine a best-of figure can pair a quiet moment of one kind
    with a busy one of another; the ratio within a round (the kinds run one
    after the other) and its median across rounds hold better, and the CPU
    seconds of this process (the client; the server is another process) do
    not depend on the load at all.
    """
    print(
        "load average before: {:.1f} {:.1f} {:.1f}, after: {:.1f} {:.1f} {:.1f}".format(
            *load_before, *load_after
        )
    )
    for ours in ("ours", "full"):
        for base in ("plain", "synced"):
            pairs = [b / o for b, o in zip(runs[base], runs[ours], strict=True)]
            print(
                f"  {ours}/{base} per round: "
                + " ".join(f"{r:.2f}x" for r in pairs)
                + f"; median {statistics.median(pairs):.2f}x"
            )
    for name, seconds in cpu.items():
        print(
            f"  client CPU {name:6}: median {statistics.median(seconds):.2f} s"
            f" (min {min(seconds):.2f}, max {max(seconds):.2f})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
