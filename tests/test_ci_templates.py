"""The CI templates users copy must name real recipes and real commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from imagefactory.cli import build_parser
from tests.conftest import RECIPES, REPO

TEMPLATES = sorted((REPO / "ci").glob("*.yml"))
COMMAND = re.compile(r"(?:\$IMAGEFACTORY|\.venv/bin/imagefactory)\s+(?P<args>[^|\n]+)")


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _matrix_recipes(document: object) -> list[str]:
    text = yaml.safe_dump(document)
    found = re.findall(r"(?:RECIPE|recipe):\n((?:\s*- [\w-]+\n)+)", text)
    return [name.strip("- \n") for block in found for name in block.splitlines() if name.strip()]


def test_there_are_templates() -> None:
    assert [p.name for p in TEMPLATES] == ["github-actions.yml", "gitlab-ci.yml"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_commands_parse_and_matrix_names_shipped_recipes(template: Path) -> None:
    document = yaml.safe_load(template.read_text())
    commands = [m["args"] for s in _strings(document) for m in COMMAND.finditer(s)]
    assert commands, "the template runs no imagefactory command"
    parser = build_parser()
    for args in commands:
        argv = [
            a.replace("$RECIPE", "x").replace("${{ matrix.recipe }}", "x")
            for a in shlex.split(args.replace("recipes/*.yaml", "recipes/x.yaml"))
        ]
        parser.parse_args(argv)  # raises UsageError for a command or flag that does not exist
    shipped = {p.stem for p in RECIPES.glob("*.yaml")}
    matrix = _matrix_recipes(document)
    assert matrix, "no recipe matrix found"
    assert set(matrix) == shipped
