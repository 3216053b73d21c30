"""``validate`` and ``recipe schema|docs|show``: the recipe format."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imagefactory.cli.common import Parser, emit_json, user_path
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT, DiagnosticsError, FileAccessError
from imagefactory.settings import Settings


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import load_recipe

    results: list[dict[str, Any]] = []
    failed = False
    unreadable = False
    for path in args.recipes:
        try:
            recipe = load_recipe(path, settings.build_limits())
        except FileAccessError as exc:
            # No answer for this recipe (exit 2), but the others are still checked.
            unreadable = True
            results.append({"recipe": str(path), "ok": False, "error": exc.to_dict()})
            sys.stderr.write(f"error: {exc.render()}\n")
            continue
        except DiagnosticsError as exc:
            failed = True
            results.append(
                {
                    "recipe": str(path),
                    "ok": False,
                    "problems": [d.to_dict() for d in exc.diagnostics],
                }
            )
            if not args.json:
                sys.stdout.write(exc.render() + "\n")
            continue
        results.append({"recipe": str(path), "ok": True, "digest": recipe.digest})
        if not args.json:
            sys.stdout.write(f"{path}: ok ({recipe.name} {recipe.version}, {recipe.digest})\n")
    if args.json:
        emit_json({"ok": not (failed or unreadable), "recipes": results})
    if unreadable:
        return EXIT_ERROR
    return EXIT_VERDICT if failed else EXIT_OK


def cmd_recipe_schema(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.fsutil import atomic_write
    from imagefactory.recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2, sort_keys=False) + "\n"
    if args.output:
        try:
            atomic_write(args.output, text, 0o644)
        except OSError as exc:
            raise FileAccessError.from_os_error(args.output, "write the schema", exc) from exc
        if args.json:
            emit_json({"ok": True, "output": str(args.output)})
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_recipe_docs(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import recipe_reference_markdown

    if args.json:
        emit_json({"ok": True, "markdown": recipe_reference_markdown()})
    else:
        sys.stdout.write(recipe_reference_markdown())
    return EXIT_OK


def cmd_recipe_show(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import load_recipe

    recipe = load_recipe(args.recipe, settings.build_limits())
    emit_json({"digest": recipe.digest, "recipe": recipe.canonical()})
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[common], help="check recipes; prints ok or errors")
    p.add_argument("recipes", type=user_path, nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_validate)

    recipe = sub.add_parser("recipe", help="recipe format tools")
    rsub = recipe.add_subparsers(dest="recipe_command", required=True, parser_class=Parser)
    p = rsub.add_parser("schema", parents=[common], help="print the recipe JSON Schema")
    p.add_argument("--output", type=user_path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_recipe_schema)
    p = rsub.add_parser("docs", parents=[common], help="print the recipe reference (markdown)")
    p.set_defaults(func=cmd_recipe_docs)
    p = rsub.add_parser("show", parents=[common], help="print the resolved recipe as JSON")
    p.add_argument("recipe", type=user_path)
    p.set_defaults(func=cmd_recipe_show)
