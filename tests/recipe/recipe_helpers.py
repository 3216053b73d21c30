"""Shared helpers for the recipe tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from imagefactory.errors import RecipeError
from imagefactory.recipe import DEFAULT_LIMITS, BuildLimits, load_recipe

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parents[2]
RECIPES = REPO / "recipes"

#: The smallest complete recipe, for tests that add one thing to it.
MINIMAL = """\
name: demo
version: "1"
base: {distro: debian, release: "12"}
vo: ops
"""


def problems(path: Path, policy: BuildLimits = DEFAULT_LIMITS) -> list[str]:
    """The rendered diagnostics of loading ``path``, which must fail."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, policy)
    return [diagnostic.render() for diagnostic in info.value.diagnostics]


def write(directory: Path, name: str, text: str) -> Path:
    """Write a recipe (dedented) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path
