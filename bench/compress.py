"""Benchmark: a compressed qcow2 (``disk.compress``) against the plain one, same disk.

    PYTHONPATH=. .venv/bin/python bench/compress.py IMAGE.qcow2 [--arch A]
        [--rounds N] [--no-boot] [--zstd] [--work DIR]

From the given disk (an image's qcow2, as a build writes it; never written)
it makes, in a temporary directory, the plain qcow2 the build writes without
compression (``qemu-img convert -O qcow2``: the baseline) and the compressed
one the build writes with ``disk.compress`` (``convert_argv``: ``-c``, zlib);
with ``--zstd`` also a zstd one, for comparison only (the project does not
write or accept it). For each it prints the conversion time (the build's
``assemble`` step pays it once), the file size (what publish, pull and the
disk hash read), the time of a sha256 over the file (what verify and pull
read) and, unless ``--no-boot``, the boot test's time to the login prompt
(qemu decompresses every cluster it reads), each as a ratio to the plain
disk. Boots alternate plain / compressed for ``--rounds`` and the fastest
of each is kept (min-of-N: the machine is shared and noisy). Timings are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from imagefactory.boot.qemu import boot_test
from imagefactory.builder.assemble import convert_argv
from imagefactory.digest import hash_file
from imagefactory.diskformat import check_safe
from imagefactory.run import run
from imagefactory.settings import load_settings
from imagefactory.vocab import Arch, DiskFormat


def _timed_convert(argv: list[str]) -> float:
    started = time.monotonic()
    run(argv)
    return time.monotonic() - started


def _hash_seconds(path: Path) -> float:
    started = time.monotonic()
    hash_file(path)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", type=Path, help="a built image's qcow2 (read only)")
    parser.add_argument("--arch", default="x86_64", choices=[a.value for a in Arch])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-boot", action="store_true", help="sizes and conversions only")
    parser.add_argument("--zstd", action="store_true", help="also a zstd one, for comparison")
    parser.add_argument("--work", type=Path, default=None, help="where the copies go")
    args = parser.parse_args()
    check_safe(args.image, declared_format="qcow2")
    settings = load_settings(None)
    arch = Arch(args.arch)
    with tempfile.TemporaryDirectory(prefix="bench-compress-", dir=args.work) as tmp:
        work = Path(tmp)
        disks = {"plain": work / "plain.qcow2", "zlib": work / "zlib.qcow2"}
        plain_argv = convert_argv(args.image, disks["plain"], DiskFormat.QCOW2, compress=False)
        plain_argv[3] = "qcow2"  # the source is a qcow2 here, not the build's raw
        zlib_argv = convert_argv(args.image, disks["zlib"], DiskFormat.QCOW2, compress=True)
        zlib_argv[3] = "qcow2"
        converts = {"plain": _timed_convert(plain_argv), "zlib": _timed_convert(zlib_argv)}
        if args.zstd:
            disks["zstd"] = work / "zstd.qcow2"
            argv = [*zlib_argv[:-2], str(args.image), str(disks["zstd"])]
            argv[argv.index("compression_type=zlib")] = "compression_type=zstd"
            converts["zstd"] = _timed_convert(argv)
        base_size = disks["plain"].stat().st_size
        base_hash = _hash_seconds(disks["plain"])
        header = ("disk", "convert s", "size MiB", "size x", "sha256 s", "x")
        print("{:6} {:>10} {:>10} {:>7} {:>9} {:>6}".format(*header))
        for name, path in disks.items():
            size = path.stat().st_size
            hashed = base_hash if name == "plain" else _hash_seconds(path)
            print(
                f"{name:6} {converts[name]:10.1f} {size / 2**20:10.1f} {size / base_size:7.3f}"
                f" {hashed:9.2f} {hashed / base_hash:6.2f}"
            )
        if args.no_boot:
            return 0
        best: dict[str, float] = {}
        for round_ in range(args.rounds):
            for name, path in disks.items():
                result = boot_test(
                    path,
                    "qcow2",
                    arch,
                    work / f"{name}-{round_}.log",
                    accel_setting=settings.accel,
                    accel_cache=settings.cache_dir / "accel.json",
                )
                if not result.passed:
                    print(f"boot of {name} failed: {result.reason}", file=sys.stderr)
                    return 1
                best[name] = min(best.get(name, result.seconds), result.seconds)
                print(
                    f"round {round_ + 1}: boot {name} {result.seconds:.1f} s ({result.accel})",
                    flush=True,
                )
        for name, seconds in best.items():
            print(f"boot {name}: {seconds:.1f} s, {seconds / best['plain']:.2f}x plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
