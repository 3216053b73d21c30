"""The recipe's JSON Schema and reference documentation, generated from the field table."""

from __future__ import annotations

import json
from typing import Any

from imagefactory.fields.types import Field, ListOf, Struct
from imagefactory.recipe.fields import RECIPE

SCHEMA_ID = "https://imagefactory.invalid/schemas/recipe.json"


def recipe_json_schema() -> dict[str, Any]:
    """The recipe format as JSON Schema (draft 2020-12).

    It describes a recipe file as written. Checks that need more than one
    file or the build host (``extends`` targets, source files, the host's
    element allowlist and script policy) are left to :func:`load_recipe`.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "imagefactory recipe",
        "description": "A declarative recipe for a grid worker-node disk image.",
        **RECIPE.json_schema(),
    }


def recipe_reference_markdown() -> str:
    """The recipe format as a markdown reference: one table per mapping, then its rules."""
    out = [
        "# Recipe reference",
        "",
        "<!-- Generated from imagefactory/recipe/fields.py by recipe_reference_markdown();"
        " do not edit. -->",
        "",
    ]
    for title, struct in _sections("", RECIPE):
        out += [f"## {title}", "", "| Key | Type | Default | Allowed values | Description |"]
        out.append("| --- | --- | --- | --- | --- |")
        out += [_row(spec) for spec in struct.fields]
        if struct.exactly_one:
            out.append("")
            out += [
                "Give exactly one of " + " or ".join(f"`{name}`" for name in group) + "."
                for group in struct.exactly_one
            ]
        if struct.rules:
            out += ["", "Rules:", ""]
            out += [f"- {rule.help}" for rule in struct.rules]
        out.append("")
    return "\n".join(out)


def _sections(path: str, struct: Struct) -> list[tuple[str, Struct]]:
    """Every mapping of the format with its key path, depth first."""
    found = [(f"`{path}`" if path else "Top level", struct)]
    for spec in struct.fields:
        inner = spec.type.item if isinstance(spec.type, ListOf) else spec.type
        suffix = "[]" if isinstance(spec.type, ListOf) else ""
        if isinstance(inner, Struct):
            found += _sections(f"{path}.{spec.name}{suffix}", inner)
    return found


def _row(spec: Field) -> str:
    inner = spec.type.item if isinstance(spec.type, ListOf) else spec.type
    if spec.required:
        default = "required"
    elif isinstance(spec.type, Struct):
        default = "see below"
    else:
        value = spec.default_json()
        default = "none" if value is None else f"`{json.dumps(value)}`"
    allowed = "see below" if isinstance(inner, Struct) else spec.type.allowed()
    cells = [f"`{spec.name}`", spec.type.label, default, allowed, spec.help]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
