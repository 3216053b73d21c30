"""``lint``: review recipes for a merge request, against the site's trust policy and catalog."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import catalog_location, user_path
from imagefactory.errors import EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings

FORMATS = ("text", "markdown", "json")


def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.lint import lint_recipe
    from imagefactory.lint.report import render_json, render_markdown, render_text
    from imagefactory.trust import load_policy

    if args.root and not args.catalog:
        from imagefactory.errors import UsageError

        raise UsageError("--root is the pinned root of --catalog; give --catalog too")
    policy = load_policy(args.policy) if args.policy else None
    results = [lint_recipe(path, settings.build_limits(), policy) for path in args.recipes]
    if args.catalog:
        _compare_with_catalog(args, results)
    fmt = "json" if args.json else args.format
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    sys.stdout.write(render(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_VERDICT


def _compare_with_catalog(args: argparse.Namespace, results: list[Any]) -> None:
    """Each valid recipe against the version of its image the catalog publishes now."""
    from imagefactory.catalog.versions import version_key
    from imagefactory.lint.published import PublishedImage, apply
    from imagefactory.sbom import sbom_packages
    from imagefactory.store.published import latest_published, local_root
    from imagefactory.store.pull import read_root

    root = read_root(args.root or local_root(args.catalog))
    wanted = {(r.labels["vo"][0], r.labels["image"]["name"]) for r in results if r.labels}
    published = latest_published(args.catalog, root, wanted, args.timeout)
    for result in results:
        if not result.labels:
            continue
        found = published.get((result.labels["vo"][0], result.labels["image"]["name"]))
        image = None
        if found is not None:
            d = found.descriptor
            where = f"{args.catalog}: {d.vo}/{d.name} {d.version} SBOM"
            packages = None if found.sbom is None else sbom_packages(found.sbom, where)
            image = PublishedImage(args.catalog, d.version, d.labels, packages, d.published)
        apply(result, args.catalog, image, version_key)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "lint",
        parents=[common],
        help="review recipes: problems, what the site policy would refuse, the labels to expect,"
        " and what changes against the published version",
    )
    p.add_argument("recipes", type=user_path, nargs="+", metavar="RECIPE")
    p.add_argument("--policy", type=user_path, help="the site's trust policy to check against")
    p.add_argument(
        "--catalog",
        type=catalog_location,
        metavar="DIR-or-URL",
        help="compare with the version the catalog publishes now (labels and SBOM, no disk)",
    )
    p.add_argument(
        "--root",
        type=user_path,
        metavar="ROOT.json",
        help="the catalog's pinned root metadata; required for a URL (default for a"
        " directory: its own metadata/1.root.json)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds without data before the catalog is given up (default 30)",
    )
    p.add_argument("--format", choices=FORMATS, default="text", help="output (default text)")
    p.set_defaults(func=cmd_lint)
