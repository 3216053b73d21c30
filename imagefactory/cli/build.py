"""``build``: a recipe into a disk image, through every step of the builder."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefactory.cli.common import emit_json, user_path
from imagefactory.errors import EXIT_OK, UsageError
from imagefactory.settings import Settings

if TYPE_CHECKING:
    from imagefactory.recipe.model import Recipe


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.builder.context import BuildOptions
    from imagefactory.builder.pipeline import build
    from imagefactory.progress import Progress
    from imagefactory.recipe import load_recipe

    recipe = load_recipe(args.recipe, settings.build_limits())
    if args.compress:
        recipe = compressed(recipe, args.recipe)
    options = BuildOptions(
        use_cache=not args.no_cache,
        use_layer=not args.no_layer_cache,
        boot_test=args.boot_test,
        boot_timeout=args.boot_timeout,
        replace=args.replace,
        verbose=args.verbose,
    )
    result = build(recipe, settings, options, Progress(), output_root=args.output)
    if args.json:
        emit_json(result.to_dict())
    else:
        state = "published" if result.published else "already up to date"
        source = " (from cache)" if result.cache_hit else ""
        sys.stdout.write(f"{result.directory}: {state}{source}\n")
        layer = result.record.get("layer") or {}
        if layer.get("used") and not result.cache_hit:
            how = "from the layer cache" if layer.get("hit") else "built by this build"
            sys.stdout.write(f"  started from the OS-tree layer {layer['key'][:12]} ({how})\n")
        for name, info in result.record["disk"]["files"].items():
            sys.stdout.write(f"  {name}  {info['sha256']}\n")
        audit = result.record.get("audit")
        if audit:
            sys.stdout.write(
                f"  audit: {audit['pass']} pass, {audit['fail']} fail, {audit['warn']} warn; "
                "labels.json and sbom.cdx.json written\n"
            )
    return EXIT_OK


def compressed(recipe: Recipe, path: Path) -> Recipe:
    """The recipe with ``disk.compress`` set, as ``build --compress`` asks.

    The resolved recipe (``build.json``, the cache key, the labels' recipe digest)
    then says so: what was built is what is recorded.
    """
    from imagefactory.vocab import DiskFormat

    if DiskFormat.QCOW2 not in recipe.disk.formats:
        formats = ", ".join(str(f) for f in recipe.disk.formats)
        raise UsageError(
            f"{path}: --compress needs qcow2 in disk.formats (formats: {formats});"
            " only a qcow2 has compressed clusters",
            hint="add qcow2 to the recipe's disk.formats, or build without --compress",
        )
    return dataclasses.replace(recipe, disk=dataclasses.replace(recipe.disk, compress=True))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("build", parents=[common], help="build a recipe into a disk image")
    p.add_argument("recipe", type=user_path, help="recipe YAML file")
    p.add_argument(
        "--output", type=user_path, help="output root (default: settings build.output_dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="build even if the cache has it")
    p.add_argument(
        "--no-layer-cache",
        action="store_true",
        help="a full build: do not start from the cached OS-tree layer of the recipes it extends",
    )
    p.add_argument("--boot-test", action="store_true", help="boot the image as the last step")
    p.add_argument("--boot-timeout", type=float, default=900.0, metavar="SECONDS")
    p.add_argument(
        "--compress",
        action="store_true",
        help="write the qcow2 with compressed clusters (as disk.compress: true in the recipe)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a different build already published under this version",
    )
    p.set_defaults(func=cmd_build)
