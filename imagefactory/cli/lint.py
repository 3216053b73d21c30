"""``lint``: review recipes for a merge request, against the site's trust policy."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import user_path
from imagefactory.errors import EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings

FORMATS = ("text", "markdown", "json")


def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.lint import lint_recipe
    from imagefactory.lint.report import render_json, render_markdown, render_text
    from imagefactory.trust import load_policy

    policy = load_policy(args.policy) if args.policy else None
    results = [lint_recipe(path, settings.build_limits(), policy) for path in args.recipes]
    fmt = "json" if args.json else args.format
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    sys.stdout.write(render(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_VERDICT


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "lint",
        parents=[common],
        help="review recipes: problems, what the site policy would refuse, the labels to expect",
    )
    p.add_argument("recipes", type=user_path, nargs="+", metavar="RECIPE")
    p.add_argument("--policy", type=user_path, help="the site's trust policy to check against")
    p.add_argument("--format", choices=FORMATS, default="text", help="output (default text)")
    p.set_defaults(func=cmd_lint)
