"""Benchmark the catalog at scale: 1,000 images across 20 VOs.

    PYTHONPATH=. .venv/bin/python bench/catalog_scale.py [--images 1000] [--vos 20]

Each VO gets its own delegated role and key. Images (tiny signed image
directories: the cost measured is the catalog's, not copying disks) are
published round-robin across the VOs; the time per ``publish`` is printed per
tenth of the run, so growth shows (goal: flat). Then a new site refreshes and
selects 10 images of one VO, and the metadata bytes it downloaded are printed
against the size of the whole catalog's metadata, at each size.

Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from imagefactory.attest.keys import generate_key, load_public_key, load_signer
from imagefactory.catalog.ops import delegate
from imagefactory.catalog.publish import publish
from imagefactory.catalog.repo import Catalog
from imagefactory.store.transport import Source
from imagefactory.store.updater import CatalogClient
from tests.catalog.world import fresh
from tests.fakes.imagedirs import key_sign, make_image


def metadata_bytes(catalog: Catalog) -> int:
    return sum(p.stat().st_size for p in catalog.metadata_dir.iterdir() if p.is_file())


def site_refresh_bytes(catalog: Catalog, work: Path, vo: str) -> tuple[int, int, int]:
    """(metadata bytes, descriptor bytes, images offered) for a site selecting ``vo``."""
    state = Path(tempfile.mkdtemp(dir=work, prefix="site-"))
    client = CatalogClient(
        Source.parse(str(catalog.directory)),
        (catalog.metadata_dir / "root.json").read_bytes(),
        state,
    )
    result = client.refresh({vo})
    offers = sorted(result.offers, key=lambda o: o.info.path)[:10]
    descriptors = sum(o.info.length for o in offers)
    shutil.rmtree(state)
    return result.metadata_bytes, descriptors, len(result.offers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--vos", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="if-bench-scale-"))
    try:
        catalog = Catalog(work / "catalog")
        catalog.init()
        vos = [f"vo{i:02d}" for i in range(args.vos)]
        keys = {}
        (work / "keys").mkdir()
        for vo in vos:
            keys[vo] = generate_key(work / "keys" / vo).private
            delegate(catalog, vo, [load_public_key(Path(str(keys[vo]) + ".pub"))])
        print(f"making {args.images} signed images ...", flush=True)
        images = []
        for i in range(args.images):
            vo = vos[i % len(vos)]
            name = f"img{i:04d}"
            path = make_image(
                work / "src" / vo / name, "1.0", edit=fresh(name, "1.0", vo), disk=os.urandom(4096)
            )
            key_sign(path, keys[vo])
            images.append((vo, path))
        step = max(1, args.images // 10)
        print(
            f"{'images':>7} {'ms/publish':>11} {'catalog metadata':>17} "
            f"{'site: metadata':>15} {'+10 descriptors':>16}"
        )
        per_tenth: list[float] = []
        for start in range(0, args.images, step):
            batch = images[start : start + step]
            t0 = time.perf_counter()
            for vo, path in batch:
                publish(catalog, path, signers=[load_signer(str(keys[vo]))])
            per = (time.perf_counter() - t0) / len(batch) * 1000
            per_tenth.append(per)
            meta, desc, _ = site_refresh_bytes(catalog, work, vos[0])
            print(
                f"{start + len(batch):7d} {per:11.1f} {metadata_bytes(catalog):17d} "
                f"{meta:15d} {desc:16d}"
            )
        growth = per_tenth[-1] / per_tenth[0]
        print(f"publish time growth, last tenth / first tenth: {growth:.2f}x (goal ~1x)")
        print(
            "site bytes: timestamp + snapshot + targets + one VO's role + 10 descriptors;"
            " catalog metadata counts every version of every role file kept"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
