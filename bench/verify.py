"""Benchmark verify: first (full) verify of a multi-GB image against ``sha256sum``, and a
cached verify.

    PYTHONPATH=. .venv/bin/python bench/verify.py [--size-gib 4] [--dir DIR]

Makes a signed image directory with a non-sparse raw disk of the given size in a
temporary directory (removed afterwards), then measures, with a warm page cache
and best of ``--repeat`` runs each:

* ``sha256sum DISK`` (the baseline);
* a full :func:`verify_image` (sha256 and sha512 of the disk, signatures,
  statement, labels) -- goal: throughput >= 0.9x sha256sum;
* a cached :func:`verify_cached` of the unchanged image -- goal: < 50 ms;
* the same cached verify through the CLI (``imagefactory verify --cache``),
  which adds interpreter start-up and imports.

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
from pathlib import Path

from imagefactory.attest.keys import generate_key, load_signer
from imagefactory.attest.sign import sign_with_key
from imagefactory.digest import CHUNK, hash_file
from imagefactory.trust import load_policy
from imagefactory.verify import verify_image
from imagefactory.verify.cache import VerifiedCache, verify_cached

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
    sbom.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1}))
    digests = hash_file(disk, ("sha256", "sha512")).hexdigests
    labels = {
        "schema": "urn:imagefactory:labels:v1",
        "image": {
            "name": "bench",
            "version": "1",
            "created": "2026-11-24T00:00:00Z",
            "expires": "2099-01-01T00:00:00Z",
        },
        "disk": {"file": disk.name, "format": "raw", "size": size, **digests},
        "os": {"distro": "debian", "version": "12", "codename": "bookworm", "arch": "x86_64"},
        "vo": ["bench"],
        "trust": {"model": "non-persistent", "root_policy": "none"},
        "audit": {"passed": True},
        "sbom": {"file": sbom.name, "sha256": hashlib.sha256(sbom.read_bytes()).hexdigest()},
    }
    (image / "labels.json").write_text(json.dumps(labels))
    return image


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
    parser.add_argument("--dir", type=Path, help="where the image goes (default: the temp dir)")
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
        subprocess.run(["sha256sum", str(disk)], check=True, capture_output=True)  # warm up

        baseline = best(
            args.repeat,
            lambda: subprocess.run(["sha256sum", str(disk)], check=True, capture_output=True),
        )

        def full() -> None:
            verdict = verify_image(image, policy)
            assert verdict.allowed, verdict.render()

        first = best(args.repeat, full)
        cache = VerifiedCache(work / "cache")
        verify_cached(image, policy, cache)

        def cached() -> None:
            assert verify_cached(image, policy, cache).cached

        hit = best(max(args.repeat, 10), cached)
        cli = [sys.executable, "-m", "imagefactory", "verify", "-q", str(image)]
        cli += ["--policy", str(policy_file), "--cache", str(work / "cache")]
        cli_hit = best(args.repeat, lambda: subprocess.run(cli, check=True, capture_output=True))

        mib = size / (1 << 20)
        print(f"cpus: {os.cpu_count()}, disk {size / GiB:.2f} GiB, best of {args.repeat}")
        print(f"sha256sum:              {baseline:8.3f} s  {mib / baseline:8.0f} MiB/s")
        print(f"verify (sha256+sha512): {first:8.3f} s  {mib / first:8.0f} MiB/s")
        print(f"  throughput ratio verify/sha256sum: {baseline / first:.2f}x  (goal >= 0.9x)")
        print(f"cached verify (API):    {hit * 1000:8.1f} ms  (goal < 50 ms)")
        print(f"cached verify (CLI):    {cli_hit * 1000:8.1f} ms  (interpreter start-up included)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
