"""Benchmark: every flavour, built and boot-tested in one run.

Builds each recipe (default: every shipped one) through the real pipeline with
``--no-cache --boot-test``, one after the other into a fresh output
directory, and prints one table:

    flavour  recipe  build s  disk MB  packages  boot s  total s

``build s`` is the build without the boot test (diskimage-builder, assembly,
hardening, audit, labels); ``disk MB`` the size of the first disk file on the
host; ``packages`` the number of installed packages read from the image;
``boot s`` the boot test (qemu to the ``login:`` prompt). A recipe the archive
refuses, or whose build fails, gets a row with its error and the run goes on.

When two rows share the recipe content but for the architecture (the same
recipe on x86_64 and aarch64), their build ratio is printed as well.

``--from DIR`` (repeatable) tabulates builds already in DIR (their ``build.json``) instead
of building. Needs root and the host packages (scripts/setup).

    .venv/bin/python bench/flavours.py [RECIPE ...] [--output DIR] [--json]
    .venv/bin/python bench/flavours.py --from DIR
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imagefactory.builder.context import BuildOptions
from imagefactory.builder.pipeline import build
from imagefactory.errors import ImageFactoryError
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
#: Steps that are the build proper (everything but the boot test and bookkeeping).
BUILD_STEPS = (
    "host",
    "archive",
    "element",
    "cache",
    "packages",
    "dib",
    "tree",
    "harden",
    "assemble",
    "audit",
    "label",
)


@dataclass
class Row:
    flavour: str
    recipe: str
    build_s: float | None = None
    disk_mb: float | None = None
    packages: int | None = None
    boot_s: float | None = None
    total_s: float | None = None
    error: str | None = None


def row_from_record(recipe: str, directory: Path, record: dict[str, Any]) -> Row:
    """A table row from a published build's directory and its build.json."""
    base = record["base"]
    disk = record["disk"]
    timings: dict[str, float] = record.get("timings", {})
    first = next(iter(disk["files"]))
    boot = record.get("boot_test") or {}
    return Row(
        flavour=f"{base['distro']} {base['version']} {base['arch']} {disk.get('boot_mode', '?')}",
        recipe=recipe,
        build_s=round(sum(timings.get(step, 0.0) for step in BUILD_STEPS), 1),
        disk_mb=round((directory / first).stat().st_size / (1 << 20), 1),
        packages=len(record.get("packages", [])),
        boot_s=boot.get("seconds"),
        total_s=timings.get("total"),
    )


def build_one(path: Path, output: Path) -> Row:
    settings = load_settings(None)
    started = time.monotonic()
    try:
        recipe = load_recipe(path, settings.build_limits())
        options = BuildOptions(use_cache=False, boot_test=True, boot_timeout=900.0)
        result = build(recipe, settings, options, Progress(stream=io.StringIO()), output)
    except ImageFactoryError as exc:
        return Row(
            flavour="?",
            recipe=path.stem,
            total_s=round(time.monotonic() - started, 1),
            error=exc.render().splitlines()[0],
        )
    return row_from_record(path.stem, result.directory, result.record)


def rows_from(directory: Path) -> list[Row]:
    rows = []
    for record_path in sorted(directory.glob("*/*/build.json")):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        rows.append(row_from_record(record["image"]["name"], record_path.parent, record))
    return rows


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def table(rows: list[Row]) -> str:
    header = ("flavour", "recipe", "build s", "disk MB", "packages", "boot s", "total s")
    body = [
        (
            r.flavour,
            r.recipe,
            _cell(r.build_s),
            _cell(r.disk_mb),
            _cell(r.packages),
            _cell(r.boot_s),
            _cell(r.total_s) + (f"  ERROR: {r.error}" if r.error else ""),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *body]:
        lines.append(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1]
        )
    return "\n".join(lines)


def arch_ratios(rows: list[Row]) -> list[str]:
    """aarch64 build time over x86_64 for rows whose recipe names differ only by the arch."""
    by_flavour = {r.flavour: r for r in rows if r.build_s}
    out = []
    for row in by_flavour.values():
        if " aarch64 " not in row.flavour:
            continue
        twin = by_flavour.get(row.flavour.replace(" aarch64 ", " x86_64 "))
        if twin is not None and twin.build_s and row.build_s:
            out.append(f"{row.flavour} / {twin.flavour}: build {row.build_s / twin.build_s:.2f}x")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", type=Path)
    parser.add_argument("--output", type=Path, help="where to build (default: a fresh temp dir)")
    parser.add_argument(
        "--from", dest="existing", type=Path, action="append", help="tabulate builds in DIR"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.existing:
        rows = [row for directory in args.existing for row in rows_from(directory)]
    else:
        recipes = args.recipes or sorted(RECIPES.glob("*.yaml"))
        output = args.output or Path(tempfile.mkdtemp(prefix="bench-flavours-"))
        rows = []
        for path in recipes:
            print(f"building {path.name} ...", file=sys.stderr, flush=True)
            rows.append(build_one(path.absolute(), output.absolute()))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(table(rows))
        for line in arch_ratios(rows):
            print(line)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
