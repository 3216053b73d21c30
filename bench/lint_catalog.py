"""Benchmark lint --catalog: its cost over plain lint, and the bytes it fetches.

    PYTHONPATH=. .venv/bin/python bench/lint_catalog.py [--disk-mib 256] [--repeat 5]

Publishes the example recipe's image (a raw disk of ``--disk-mib`` MiB and a
real SBOM with package roles, ``tests/lint/test_lint_catalog.py``) into a
catalog in a temporary directory, serves it from the static HTTP server on
127.0.0.1 (``tests/store/httpserver.py``, a child process), then measures in
the same run, best of ``--repeat``, the ``imagefactory lint`` command in
process:

* baseline: ``lint RECIPE --format markdown`` (no catalog);
* ``lint RECIPE --catalog URL --root ROOT --format markdown``: the TUF
  refresh, the descriptor and the SBOM on top;

and the bytes the server sent for one ``--catalog`` run against the size of
the published image directory (the disk is never fetched). Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagefactory.cli import main
from tests.catalog.world import make_world
from tests.lint.test_lint_catalog import _vo_repo, publish_previous

MiB = 1 << 20


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def quiet_lint(*argv: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["lint", *argv])
    if code != 0:
        raise SystemExit(f"lint {argv}: exit {code}")


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lint-catalog-", dir="/var/tmp"))
    server = None
    try:
        world = make_world(tmp)
        recipe = _vo_repo(tmp)
        publish_previous(world, recipe, disk=os.urandom(MiB) * args.disk_mib)
        published = world.catalog.directory / "images/atlas/atlas-wn-debian12/0.9"
        size = sum(p.stat().st_size for p in published.iterdir())
        root = tmp / "root.json"
        root.write_bytes((world.catalog.metadata_dir / "root.json").read_bytes())
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.store.httpserver", str(world.catalog.directory)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        markdown = ("--format", "markdown")
        base = best(args.repeat, lambda: quiet_lint(str(recipe), *markdown))
        with_catalog = best(
            args.repeat,
            lambda: quiet_lint(str(recipe), "--catalog", url, "--root", str(root), *markdown),
        )
        sent = _bytes_sent(url, recipe, root)
        print(f"published image directory: {size / MiB:.1f} MiB (disk {args.disk_mib} MiB)")
        print(f"lint (baseline):           {base * 1000:.0f} ms")
        print(f"lint --catalog URL:        {with_catalog * 1000:.0f} ms")
        print(f"ratio --catalog/baseline:  {with_catalog / base:.2f}")
        print(f"bytes fetched per run:     {sent} ({sent / size:.5f} of the image directory)")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _bytes_sent(url: str, recipe: Path, root: Path) -> int:
    """What one --catalog run transfers, counted by the client's transport."""
    from imagefactory.store import transport

    counted = [0]
    original = transport.Source.open_url

    def counting(self: transport.Source, where: str, offset: int = 0) -> object:
        chunks, start = original(self, where, offset)

        def count() -> object:
            for chunk in chunks:
                counted[0] += len(chunk)
                yield chunk

        return count(), start

    transport.Source.open_url = counting  # type: ignore[assignment,method-assign]
    try:
        quiet_lint(str(recipe), "--catalog", url, "--root", str(root), "--format", "markdown")
    finally:
        transport.Source.open_url = original  # type: ignore[method-assign]
    return counted[0]


if __name__ == "__main__":
    main_bench()
