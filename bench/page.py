"""Benchmark the catalog page: rendering it against what a publish and a site's refresh cost.

    PYTHONPATH=. .venv/bin/python bench/page.py [--images 1000] [--vos 20]

Builds a catalog of ``--images`` tiny signed images in ``--vos`` delegated VOs
(as bench/catalog_scale.py does), then times, in this one process:

* baseline: a site's verified refresh of the whole catalog plus every
  descriptor (``CatalogClient``), which the page needs anyway;
* ``write_page``: the same verification, the attestations re-hashed, the HTML
  rendered and written (what each CLI ``publish``/``revoke`` now adds);
* one more library ``publish`` into the catalog of that size;
* bulk publishing through the CLI (in-process): ``--batch`` images published
  one by one as ``imagefactory publish`` (each re-writes the page), against as
  many published with ``--no-page`` and one ``catalog render`` at the end.

Prints the times, the page size and the ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

from imagefactory import cli
from imagefactory.attest.keys import generate_key, load_public_key, load_signer
from imagefactory.catalog.ops import delegate
from imagefactory.catalog.publish import publish
from imagefactory.catalog.repo import Catalog
from imagefactory.page.write import write_page
from imagefactory.store.transport import Source
from imagefactory.store.updater import CatalogClient
from tests.catalog.world import fresh
from tests.fakes.imagedirs import key_sign, make_image


def verified_refresh(catalog: Catalog, work: Path) -> int:
    """A site's refresh of every role and every descriptor; the number of images."""
    state = Path(tempfile.mkdtemp(dir=work, prefix="site-"))
    client = CatalogClient(
        Source.parse(str(catalog.directory)),
        (catalog.metadata_dir / "root.json").read_bytes(),
        state,
    )
    offers = client.refresh().offers
    for offer in offers:
        client.descriptor(offer)
    shutil.rmtree(state)
    return len(offers)


def best(fn: object, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def cli_run(*argv: str) -> None:
    """One CLI command in this process, its output swallowed; it must succeed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(argv))
    if code != 0:
        raise SystemExit(f"imagefactory {' '.join(argv)}: exit {code}")


def bulk_publish(where: Path, made: list[tuple[Path, str]], batch: int) -> tuple[float, float]:
    """Seconds for ``batch`` CLI publishes with the page each time / with --no-page + render."""
    t0 = time.perf_counter()
    for path, key in made[:batch]:
        cli_run("publish", str(path), "--catalog", str(where), "--key", key, "-q")
    paged = time.perf_counter() - t0
    t0 = time.perf_counter()
    for path, key in made[batch:]:
        cli_run("publish", str(path), "--catalog", str(where), "--key", key, "-q", "--no-page")
    cli_run("catalog", "render", str(where))
    return paged, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--vos", type=int, default=20)
    parser.add_argument(
        "--batch", type=int, default=10, help="images per bulk publish (with and without the page)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="if-bench-page-"))
    try:
        catalog = Catalog(work / "catalog")
        catalog.init()
        vos = [f"vo{i:02d}" for i in range(args.vos)]
        keys = {}
        (work / "keys").mkdir()
        for vo in vos:
            keys[vo] = generate_key(work / "keys" / vo).private
            delegate(catalog, vo, [load_public_key(Path(str(keys[vo]) + ".pub"))])
        print(f"making and publishing {args.images} signed images ...", flush=True)
        made: list[tuple[Path, str]] = []
        for i in range(args.images + 1 + 2 * args.batch):
            vo = vos[i % len(vos)]
            name = f"img{i:04d}"
            path = make_image(
                work / "src" / vo / name, "1.0", edit=fresh(name, "1.0", vo), disk=os.urandom(4096)
            )
            key_sign(path, keys[vo])
            if i < args.images:
                publish(catalog, path, signers=[load_signer(str(keys[vo]))])
            elif i > args.images:
                made.append((path, str(keys[vo])))
        last_vo = vos[args.images % len(vos)]
        last = work / "src" / last_vo / f"img{args.images:04d}" / "1.0"
        assert verified_refresh(catalog, work) == args.images
        refresh_s = best(lambda: verified_refresh(catalog, work))
        page_s = best(lambda: write_page(catalog.directory))
        t0 = time.perf_counter()
        publish(catalog, last, signers=[load_signer(str(keys[last_vo]))])
        publish_s = time.perf_counter() - t0
        paged_s, bulk_s = bulk_publish(catalog.directory, made, args.batch)
        size = (catalog.directory / "index.html").stat().st_size
        print(f"images: {args.images} in {args.vos} VOs; page {size / 1024:.0f} KiB")
        print(f"baseline, verified refresh + all descriptors: {refresh_s * 1000:8.0f} ms")
        print(f"write_page (verify, render, write):           {page_s * 1000:8.0f} ms")
        print(f"one publish (library, no page):               {publish_s * 1000:8.0f} ms")
        print(f"page / verified refresh: {page_s / refresh_s:.2f}x")
        print(f"page / publish: {page_s / publish_s:.2f}x (what a CLI publish adds for its page)")
        n = args.batch
        print(f"{n} CLI publishes, each re-writing the page:     {paged_s * 1000:8.0f} ms")
        print(f"{n} CLI publishes --no-page + one catalog render: {bulk_s * 1000:8.0f} ms")
        print(f"bulk with --no-page / with the page each time: {bulk_s / paged_s:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
