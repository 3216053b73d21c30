"""The recipe: a declarative YAML description of a worker-node image.

:func:`load_recipe` reads a recipe and the recipes it ``extends``, checks all
of it against the field table (:mod:`imagefactory.recipe.fields`) and the
build host's :class:`BuildLimits`, and returns a frozen :class:`Recipe`, or
raises :class:`~imagefactory.errors.RecipeError` with every problem found,
each at its file, line and column.

Modules, by concern: ``yamlsource`` (YAML to position-carrying trees),
``fieldtypes`` (checking, defaults, schema per type), ``fields`` (the one
table), ``rules`` (checks a pattern cannot express), ``extends`` (parents and
merging), ``model`` (the typed result), ``schema`` (JSON Schema and docs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from imagefactory.errors import RecipeError
from imagefactory.fields.types import INVALID, Checker
from imagefactory.fields.yamlsource import Map, Scalar, Seq
from imagefactory.recipe.extends import load_with_parents
from imagefactory.recipe.fields import RECIPE
from imagefactory.recipe.limits import (
    DEFAULT_ALLOWED_ELEMENTS,
    DEFAULT_LIMITS,
    BuildLimits,
    RepositoryAllowance,
)
from imagefactory.recipe.model import (
    Base,
    Disk,
    FileSpec,
    Inherited,
    PackagePlace,
    Recipe,
    Repository,
    Script,
    Services,
    build_recipe,
)
from imagefactory.recipe.schema import recipe_json_schema, recipe_reference_markdown

__all__ = [
    "DEFAULT_ALLOWED_ELEMENTS",
    "DEFAULT_LIMITS",
    "Base",
    "BuildLimits",
    "Disk",
    "FileSpec",
    "Inherited",
    "Recipe",
    "RecipeError",
    "Repository",
    "RepositoryAllowance",
    "Script",
    "Services",
    "load_recipe",
    "recipe_json_schema",
    "recipe_reference_markdown",
]


def load_recipe(path: Path, limits: BuildLimits = DEFAULT_LIMITS) -> Recipe:
    """Load, resolve and check the recipe at ``path``.

    ``path`` is shown in diagnostics as given (relative stays relative).
    Raises :class:`~imagefactory.errors.RecipeError` listing every problem in
    the recipe and the recipes it extends, sorted by file, line and column.
    """
    loaded = load_with_parents(path, limits)
    diagnostics = list(loaded.diagnostics)
    # The parents on their own first, so a parent's mistake is found even where
    # the child overrides it; required keys and cross-file rules wait for the
    # whole. Every node of the top-level file is in the whole, unless a parent
    # could not be read and there is no whole to check.
    for document in loaded.documents[1:] if loaded.complete else loaded.documents:
        ck = Checker(limits)
        RECIPE.parse(document, ck, partial=True)
        diagnostics += ck.diagnostics
    whole = Checker(limits)
    values = INVALID
    if loaded.tree is not None and loaded.complete:
        values = RECIPE.parse(loaded.tree, whole, partial=False)
        diagnostics += whole.diagnostics
    if diagnostics or not isinstance(values, dict):
        unique = sorted(
            set(diagnostics), key=lambda d: (d.file, d.line, d.column, d.path, d.message)
        )
        raise RecipeError(unique)
    recipe = build_recipe(values, list(loaded.sources))
    return dataclasses.replace(
        recipe,
        package_places=_package_places(loaded.tree),
        inherited=_inherited(loaded.parents),
    )


def _inherited(parents: Map | None) -> Inherited | None:
    """The packages and repository names the parents' combined tree holds.

    Read after the whole recipe checked without a problem, so every entry is
    the string (or mapping with a string ``name``) the field table allows.
    """
    if parents is None:
        return None
    packages: list[str] = []
    entry = parents.get("packages")
    if entry is not None and isinstance(entry.value, Seq):
        packages = [
            item.value
            for item in entry.value.items
            if isinstance(item, Scalar) and isinstance(item.value, str)
        ]
    names: list[str] = []
    entry = parents.get("repositories")
    if entry is not None and isinstance(entry.value, Seq):
        for item in entry.value.items:
            name = item.get("name") if isinstance(item, Map) else None
            if name is not None and isinstance(name.value, Scalar):
                names.append(str(name.value.value))
    return Inherited(packages=tuple(packages), repositories=tuple(names))


def _package_places(tree: Map | None) -> tuple[PackagePlace, ...]:
    """Where each ``packages`` entry of the combined tree was written (a parent's: in it)."""
    entry = tree.get("packages") if tree is not None else None
    if entry is None or not isinstance(entry.value, Seq):
        return ()
    places = []
    for item in entry.value.items:
        if isinstance(item, Scalar) and isinstance(item.value, str):
            mark = item.mark
            places.append(
                PackagePlace(item.value, mark.origin.display, mark.line, mark.column, mark.path)
            )
    return tuple(places)
