"""Benchmark: verifying a recipe's third-party repository against fetching it unchecked.

Makes a signed test repository (``tests/fakes/aptrepo.py``: ``--packages``
tiny .debs indexed by apt-ftparchive, an ed25519 key), serves it on
127.0.0.1, and times, alternating ``--rounds`` times in this one process:

1. baseline: a plain fetch of the suite's ``InRelease`` and ``Packages.xz``
   (what an unchecked download of the same files costs);
2. ``verify_repository`` with a cold index cache: the same fetches plus the
   gpgv run against the pinned key, the Release checks and the index digest;
3. ``verify_repository`` with a warm index cache (the index is read by digest).

The fastest of each is compared and printed with the ratios to the baseline
(this machine is shared and noisy). Goal: the verification adds well under a
second per repository to a build's archive step. Needs gpg, gpgv, dpkg-deb,
apt-ftparchive (scripts/setup --test).

    .venv/bin/python bench/aptrepo.py [--rounds N] [--packages N]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imagefactory.aptrepo import verify_repository  # noqa: E402
from imagefactory.mirrors import fetch_file  # noqa: E402
from imagefactory.pgpkey import read_public_key  # noqa: E402
from imagefactory.recipe.model import Repository  # noqa: E402
from imagefactory.vocab import Arch  # noqa: E402
from tests.fakes.aptrepo import SUITE, build_deb, make_key, make_repository  # noqa: E402
from tests.store.httpserver import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--packages", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-aptrepo-"))
    key = make_key(work / "gnupg")
    server: Server | None = None
    try:
        debs = [build_deb(work, f"pkg{i:04d}", "1.0-1") for i in range(args.packages)]
        make_repository(work / "repo", key, debs)
        server = Server(work / "repo").start()
        public = read_public_key(key.export())
        repository = Repository(
            "bench", server.url, (SUITE,), ("main",), key.fingerprint, public.binary
        )
        base = f"{server.url}/dists/{SUITE}"

        def baseline() -> None:
            fetch_file(f"{base}/InRelease", limit=1 << 24)
            fetch_file(f"{base}/main/binary-amd64/Packages.xz", limit=1 << 26)

        def cold() -> None:
            cache = work / "cold-cache"
            shutil.rmtree(cache, ignore_errors=True)
            verify_repository(repository, Arch.X86_64, keys_dir=None, cache_dir=cache)

        warm_cache = work / "warm-cache"
        verify_repository(repository, Arch.X86_64, keys_dir=None, cache_dir=warm_cache)

        def warm() -> None:
            verify_repository(repository, Arch.X86_64, keys_dir=None, cache_dir=warm_cache)

        runs = {"baseline fetch": baseline, "verify (cold cache)": cold, "verify (warm)": warm}
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - started)
        base_time = best["baseline fetch"]
        print(f"repository: {args.packages} packages, fastest of {args.rounds} rounds")
        for name, seconds in best.items():
            print(f"  {name:<22} {seconds * 1000:8.1f} ms   x{seconds / base_time:6.1f}")
    finally:
        if server is not None:
            server.stop()
        key.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
