"""Benchmark verify: first (full) verify of a multi-GB image against one hashlib sha256
pass over the same file in the same process, and a cached verify.

    PYTHONPATH=. .venv/bin/python bench/verify.py [--size-gib 4] [--dir /var/tmp]

Makes a signed image directory with a non-sparse raw disk of the given size in a
temporary directory under ``--dir`` (removed afterwards), then measures, with a
warm page cache and best of ``--repeat`` runs each, alternating:

* the baseline: one sha256 of the disk with hashlib in this process, the
  fastest of ``hashlib.file_digest`` and a plain 4 MiB read loop;
* the naive figure: sha256 and sha512 of the disk in one pass (what verify
  did before: the speed of sha512, which has no CPU instructions here);
* a full :func:`verify_image` (sha256 of the disk, signatures, statement,
  labels) -- goal: throughput >= 0.9x the baseline;
* a cached :func:`verify_cached` of the unchanged image -- goal: < 50 ms;
* the CLI: a full ``imagefactory verify`` and a cached one, whose time is
  interpreter start-up and imports (reported separately, not in the ratio).

Prints figures and ratios; asserts nothing (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imagefactory.attest.keys import generate_key, load_signer
from imagefactory.attest.sign import sign_with_key
from imagefactory.digest import CHUNK, hash_file
from imagefactory.trust import load_policy
from imagefactory.verify import verify_image
from imagefactory.verify.cache import VerifiedCache, verify_cached
from tests.fakes.imagedirs import labels_for, sbom_bytes

GiB = 1 << 30


def make_image(directory: Path, size: int) -> Path:
    image = directory / "image"
    image.mkdir()
    disk = image / "bench.raw"
    block = os.urandom(CHUNK)
    with disk.open("wb") as stream:
        for offset in range(0, size, CHUNK):
            # Vary every block a little so nothing can be deduplicated or skipped.
            stream.write(offset.to_bytes(8, "little") + block[8 : min(CHUNK, size - offset)])
    sbom = image / "sbom.cdx.json"
    sbom.write_bytes(sbom_bytes())
    (image / "audit.json").write_text(json.dumps({"passed": True, "checks": []}))
    digests = hash_file(disk, ("sha256", "sha512")).hexdigests
    # The tests' complete labels (schema-valid), over a small stand-in disk, then this disk's.
    stand_in = directory / "stand-in.raw"
    stand_in.write_bytes(b"\0" * 512)
    labels = labels_for(stand_in, sbom)
    stand_in.unlink()
    now = datetime.now(UTC)
    labels["image"].update(
        name="bench",
        version="1",
        created=(now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        expires=(now + timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    labels["disk"].update(file=disk.name, size=size, virtual_size=size, **digests)
    labels["vo"] = ["bench"]
    (image / "labels.json").write_text(json.dumps(labels))
    return image


def stdlib_sha256(path: Path) -> str:
    """One sha256 of ``path`` with ``hashlib.file_digest``."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def loop_sha256(path: Path) -> str:
    """One sha256 of ``path``: a plain loop of large reads into one buffer."""
    h = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as raw:
        while n := raw.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    # Not /tmp: a tmpfs there would hold the 4 GiB disk in memory.
    where = Path("/var/tmp")  # noqa: S108 -- a parent for mkdtemp, not a file name
    parser.add_argument("--dir", type=Path, default=where, help="where the image goes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = int(args.size_gib * GiB)
    work = Path(tempfile.mkdtemp(prefix="if-bench-", dir=args.dir))
    try:
        print(f"making a {size / GiB:.1f} GiB signed image in {work} ...", flush=True)
        image = make_image(work, size)
        key = generate_key(work / "key")
        sign_with_key(image, load_signer(str(key.private)))
        policy_file = work / "site.yaml"
        policy_file.write_text(
            f"vos:\n  bench:\n    signers:\n      - name: bench\n        key: {key.public}\n"
        )
        policy = load_policy(policy_file)
        disk = image / "bench.raw"
        stdlib_sha256(disk)  # warm the page cache

        def full() -> None:
            verdict = verify_image(image, policy)
            assert verdict.allowed, verdict.render()

        # Alternating rounds: this machine is shared, its load changes by the second.
        runs: dict[str, list[float]] = {"baseline": [], "naive": [], "verify": []}
        for _ in range(args.repeat):
            runs["baseline"].append(timed(lambda: stdlib_sha256(disk)))
            runs["baseline"].append(timed(lambda: loop_sha256(disk)))
            runs["naive"].append(timed(lambda: hash_file(disk, ("sha256", "sha512"))))
            runs["verify"].append(timed(full))
        baseline, naive, first = (min(runs[k]) for k in ("baseline", "naive", "verify"))
        cache = VerifiedCache(work / "cache")
        verify_cached(image, policy, cache)

        def cached() -> None:
            assert verify_cached(image, policy, cache).cached

        hit = best(max(args.repeat, 10), cached)
        cli = [sys.executable, "-m", "imagefactory", "verify", "-q", str(image)]
        cli += ["--policy", str(policy_file)]
        cli_full = best(args.repeat, lambda: subprocess.run(cli, check=True, capture_output=True))
        cli += ["--cache", str(work / "cache")]
        cli_hit = best(args.repeat, lambda: subprocess.run(cli, check=True, capture_output=True))

        mib = size / (1 << 20)
        print(f"cpus: {os.cpu_count()}, disk {size / GiB:.2f} GiB, best of {args.repeat}")
        print(f"baseline: hashlib sha256 pass: {baseline:8.3f} s  {mib / baseline:8.0f} MiB/s")
        print(
            f"naive: sha256+sha512 pass:     {naive:8.3f} s  {mib / naive:8.0f} MiB/s"
            f"  {baseline / naive:.2f}x"
        )
        print(f"verify (API, sha256 only):    {first:8.3f} s  {mib / first:8.0f} MiB/s")
        print(f"  throughput ratio verify/hashlib sha256: {baseline / first:.2f}x  (goal >= 0.9x)")
        print(f"cached verify (API):          {hit * 1000:8.1f} ms  (goal < 50 ms)")
        print(
            f"verify (CLI):                 {cli_full:8.3f} s  (start-up included;"
            f" less start-up {baseline / max(cli_full - cli_hit, 1e-9):.2f}x)"
        )
        print(
            f"cached verify (CLI):          {cli_hit * 1000:8.1f} ms  (= CLI start-up and imports)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
