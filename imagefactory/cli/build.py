"""``build``: a recipe into a disk image, through every step of the builder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import emit_json, user_path
from imagefactory.errors import EXIT_OK
from imagefactory.settings import Settings


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.builder.context import BuildOptions
    from imagefactory.builder.pipeline import build
    from imagefactory.progress import Progress
    from imagefactory.recipe import load_recipe

    recipe = load_recipe(args.recipe, settings.build_limits())
    options = BuildOptions(
        use_cache=not args.no_cache,
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
        for name, info in result.record["disk"]["files"].items():
            sys.stdout.write(f"  {name}  {info['sha256']}\n")
        audit = result.record.get("audit")
        if audit:
            sys.stdout.write(
                f"  audit: {audit['pass']} pass, {audit['fail']} fail, {audit['warn']} warn; "
                "labels.json and sbom.cdx.json written\n"
            )
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("build", parents=[common], help="build a recipe into a disk image")
    p.add_argument("recipe", type=user_path, help="recipe YAML file")
    p.add_argument(
        "--output", type=user_path, help="output root (default: settings build.output_dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="build even if the cache has it")
    p.add_argument("--boot-test", action="store_true", help="boot the image as the last step")
    p.add_argument("--boot-timeout", type=float, default=900.0, metavar="SECONDS")
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a different build already published under this version",
    )
    p.set_defaults(func=cmd_build)
