"""Benchmark instantiate and discard against a full copy of the image (cp, rsync), per size.

    PYTHONPATH=. .venv/bin/python bench/instantiate.py [--sizes-mib 800,4096] [--repeat 5]

For each size (default: the example's qcow2, about 800 MiB, and 4 GiB) it
writes a raw disk of real data (every 1 MiB block different, nothing sparse:
a copy must move every byte), signs it, installs it into a store the way pull
does (staged, sealed, verified in full, renamed in, its verdict in the store's
verified cache), then times, best of ``--repeat``, in the same run:

* ``cp --reflink=never`` and ``rsync`` (``--whole-file``) of the disk into a
  file on the same file system (what a site did per job start before
  overlays; the page cache is warm, so this is the copy's best case; best of
  at most 3, the copies being the long part of the run);
* ``qemu-img create`` of the same overlay alone (the one tool instantiate
  runs: most of its time);
* :func:`instantiate` in this process (its own work: the checks, the cache
  key, ``qemu-img create``, the record, the rename);
* ``imagefactory instantiate`` as a process (what a batch prologue runs; adds
  the interpreter's start);
* the whole prologue as processes: ``imagefactory select`` + ``instantiate``;
* :func:`discard` in this process and ``imagefactory discard`` as a process.

Then the ratios: each copy over instantiate's own work, and instantiate's time
at the largest size over the smallest (flat: about 1). Prints; asserts nothing.
Needs root (the run directory must be root's) and about twice the largest size
free on the file system of ``--work`` (default /var/tmp).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagefactory.digest import hash_file
from imagefactory.instances.live import discard
from imagefactory.instances.make import instantiate
from imagefactory.store.layout import Store, StoreState
from imagefactory.trust import load_policy
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.cache import VerifiedCache, image_key
from imagefactory.verify.labels import now_utc
from imagefactory.verify.pipeline import verify_image
from tests.fakes.imagedirs import (
    key_sign,
    key_signer,
    make_image,
    new_key,
    read_labels,
    vo_rules,
    write_labels,
    write_policy,
)

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
KEY = "atlas/atlas-wn-debian12/1.0"


def best(repeat: int, action: Callable[[int], object]) -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - start)
    return min(times)


def write_disk(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with path.open("wb") as stream:
        for offset in range(0, size, MiB):
            # Every block different: nothing can be deduplicated, skipped or left sparse.
            stream.write(offset.to_bytes(8, "little") + block[8 : min(MiB, size - offset)])


def install(work: Path, size: int) -> tuple[Path, Path, TrustPolicy]:
    """A store holding one verified image of ``size`` bytes: (store, policy file, policy)."""
    image = make_image(work / "src", "image")
    disk = next(image.glob("*.raw"))
    write_disk(disk, size)
    digests = hash_file(disk, ("sha256", "sha512")).hexdigests
    labels = read_labels(image)
    labels["disk"].update(size=size, virtual_size=size, **digests)
    write_labels(image, labels)
    key = new_key(work, "atlas")
    key_sign(image, key)
    policy_file = write_policy(work / "site.yaml", {"atlas": vo_rules(key_signer("atlas", key))})
    policy = load_policy(policy_file)
    store = Store(work / "store")
    store.create()
    staging = store.staging()
    for path in image.iterdir():
        os.link(path, staging / path.name)  # no second copy of the disk
    store.seal(staging)
    verdict = verify_image(staging, policy)
    if not verdict.allowed:
        raise SystemExit("the bench image does not verify: " + verdict.render())
    store.save_state(StoreState(images={KEY: {"descriptor": "bench"}}))
    final = store.install(staging, KEY)
    cache_key = image_key(final, policy)
    assert cache_key is not None
    VerifiedCache(store.state_dir / "verify-cache").store(cache_key, verdict, now_utc())
    return store.directory, policy_file, policy


def measure(work: Path, size: int, repeat: int) -> dict[str, float]:
    store, policy_file, policy = install(work, size)
    image = store / KEY
    disk = next(image.glob("*.raw"))
    run_dir = work / "run"
    copy = work / "copy.raw"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "imagefactory"]
    site = ["--store", str(store), "--policy", str(policy_file), "--run-dir", str(run_dir)]
    site += ["--cache", str(work / "cache")]

    def sh(argv: list[str]) -> str:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def cp(_: int) -> None:
        sh(["cp", "--reflink=never", str(disk), str(copy)])
        copy.unlink()

    def rsync(_: int) -> None:
        sh(["rsync", "--whole-file", str(disk), str(copy)])
        copy.unlink()

    def qemu_img(i: int) -> None:
        overlay = work / f"bare-{i}.qcow2"
        sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "raw", str(overlay)])

    def ours(i: int) -> None:
        instantiate(image, f"own-{i}", store=store, policy=policy, run_dir=run_dir)

    def process(i: int) -> None:
        sh([*cli, "instantiate", str(image), "--job", f"proc-{i}", *site])

    def prologue(i: int) -> None:
        chosen = sh([*cli, "select", "--require", "vo=atlas", "--store", str(store),
                     "--policy", str(policy_file)])  # fmt: skip
        assert chosen == str(image), chosen
        sh([*cli, "instantiate", chosen, "--job", f"pro-{i}", *site])

    def discard_own(i: int) -> None:
        discard(run_dir, f"own-{i}")

    def discard_process(i: int) -> None:
        sh([*cli, "discard", "--job", f"proc-{i}", "--run-dir", str(run_dir)])

    # instantiate first: the copies leave gigabytes of writeback behind them.
    times = {
        "qemu-img-create": best(repeat, qemu_img),
        "instantiate": best(repeat, ours),
        "instantiate-process": best(repeat, process),
        "prologue-process": best(repeat, prologue),
        "discard": best(repeat, discard_own),
        "discard-process": best(repeat, discard_process),
    }
    times["cp"] = best(min(repeat, 3), cp)
    times["rsync"] = best(min(repeat, 3), rsync)
    return times


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a kill still removes the work directory (gigabytes)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="800,4096")
    parser.add_argument("--repeat", type=int, default=5)
    # Not /tmp: often a RAM disk, where a copy would be a memory copy.
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"))  # noqa: S108
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes_mib.split(",")]
    results: dict[int, dict[str, float]] = {}
    for mib in sizes:
        work = Path(tempfile.mkdtemp(prefix="if-bench-instantiate-", dir=args.work))
        work.chmod(0o755)
        try:
            print(f"{mib} MiB: writing, signing, verifying and installing the image ...")
            results[mib] = measure(work, mib * MiB, args.repeat)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        t = results[mib]
        print(f"{mib} MiB, best of {args.repeat}, ms:")
        for name, seconds in t.items():
            print(f"  {name:<22} {seconds * 1000:10.1f}")
        print(f"  cp / instantiate       {t['cp'] / t['instantiate']:10.1f}x")
        print(f"  rsync / instantiate    {t['rsync'] / t['instantiate']:10.1f}x")
        print(f"  cp / instantiate-proc  {t['cp'] / t['instantiate-process']:10.1f}x")
        beyond = (t["instantiate"] - t["qemu-img-create"]) * 1000
        print(f"  instantiate - qemu-img {beyond:10.1f} ms")
    if len(sizes) > 1:
        small, large = results[min(sizes)], results[max(sizes)]
        print(f"flat across sizes ({max(sizes)} MiB over {min(sizes)} MiB):")
        for name in ("instantiate", "instantiate-process", "discard", "cp"):
            print(f"  {name:<22} {large[name] / small[name]:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
