"""Load a recipe with the recipes it ``extends``, and combine them into one tree.

Parents are found relative to the file that names them and must stay inside
the include roots. Combining works on the position-carrying trees, so every
value keeps the file, line and column it was written at, and a problem in a
parent is reported in the parent.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from imagefactory.errors import Diagnostic
from imagefactory.fields.types import (
    INVALID,
    Checker,
    FieldType,
    ListOf,
    MapOf,
    Merge,
    OneOrMany,
    Struct,
)
from imagefactory.fields.yamlsource import (
    Entry,
    Map,
    Node,
    Origin,
    Scalar,
    Seq,
    describe,
    load_document,
    plain,
)
from imagefactory.recipe.fields import MAX_EXTENDS_DEPTH, RECIPE
from imagefactory.recipe.limits import BuildLimits


@dataclass
class Loaded:
    """The result of loading a recipe and its parents."""

    #: The combined tree; ``None`` if the top-level file could not be read.
    tree: Map | None = None
    #: Each file's own tree, top-level first, for checking files one by one.
    documents: list[Map] = field(default_factory=list)
    #: Every recipe file read, top-level first.
    sources: list[Path] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    #: Whether every file named was read; if not, the combined tree lacks parts.
    complete: bool = True
    #: The top-level recipe's parents combined (what it ``extends``), without
    #: its own keys; ``None`` when it extends nothing.
    parents: Map | None = None


def load_with_parents(path: Path, limits: BuildLimits) -> Loaded:
    """Load the recipe at ``path`` and, recursively, the recipes it extends."""
    top = path.absolute()
    roots = (top.parent.resolve(), *(root.resolve() for root in limits.include_roots))
    loader = _Loader(roots, limits)
    loader.result.tree = loader.load(Origin(str(path), top), chain=())
    return loader.result


class _Loader:
    def __init__(self, roots: tuple[Path, ...], limits: BuildLimits) -> None:
        self.roots = roots
        self.limits = limits
        self.result = Loaded()

    def load(self, origin: Origin, chain: tuple[Path, ...]) -> Map | None:
        real = origin.path.resolve()
        if real not in self.result.sources:
            self.result.sources.append(real)
        tree, diagnostics = load_document(real, origin, named_by_user=not chain)
        self.result.diagnostics += diagnostics
        if tree is None:
            self.result.complete = False
            return None
        if not isinstance(tree, Map):
            self.result.diagnostics.append(
                tree.mark.diagnostic(f"expected a mapping of recipe keys, found {describe(tree)}")
            )
            self.result.complete = False
            return None
        self.result.documents.append(tree)
        combined: Map | None = None
        for parent in self.parents(tree, origin, (*chain, real)):
            combined = parent if combined is None else _merge_maps(combined, parent, RECIPE)
        own = tree.without("extends")
        if not chain:
            self.result.parents = combined
        return own if combined is None else _merge_maps(combined, own, RECIPE)

    def parents(self, tree: Map, origin: Origin, chain: tuple[Path, ...]) -> list[Map]:
        entry = tree.get("extends")
        if entry is None:
            return []
        spec = RECIPE.field("extends")
        if spec is None or not isinstance(spec.type, OneOrMany):  # pragma: no cover
            raise TypeError("the field table's 'extends' must be a OneOrMany field")
        found = []
        ck = Checker(self.limits)
        for node in spec.type.nodes(entry.value, ck):
            value = spec.type.item.parse(node, ck, partial=False)
            if value is INVALID:
                continue
            parent = self.parent(node, value, origin, chain)
            if parent is not None:
                found.append(parent)
        self.result.diagnostics += ck.diagnostics
        return found

    def parent(self, node: Node, value: str, origin: Origin, chain: tuple[Path, ...]) -> Map | None:
        display = posixpath.normpath(posixpath.join(posixpath.dirname(origin.display), value))
        candidate = origin.path.parent / value
        real = candidate.resolve()
        if not real.is_file():
            # Not next to the recipe: the site's recipe directories (settings
            # build.include_roots), in order, so a VO recipe anywhere can say
            # `extends: site-base-debian12.yaml`.
            for root in self.roots[1:]:
                if (root / value).resolve().is_file():
                    candidate = root / value
                    real, display = candidate.resolve(), str(candidate)
                    break
        problem = None
        hint = None
        if not any(real.is_relative_to(root) for root in self.roots):
            problem = f"expected a recipe inside the include roots, found '{value}'"
            hint = "include roots: " + ", ".join(str(root) for root in self.roots)
        elif real in chain:
            cycle = " -> ".join(_name(p, chain[0].parent) for p in (*chain, real))
            problem = f"extends cycle: {cycle}"
        elif not real.is_file():
            problem = f"no such recipe: '{value}'"
        elif len(chain) > MAX_EXTENDS_DEPTH:
            problem = f"extends nests deeper than {MAX_EXTENDS_DEPTH} levels"
        if problem is not None:
            self.result.diagnostics.append(node.mark.diagnostic(problem, hint))
            self.result.complete = False
            return None
        return self.load(Origin(display, candidate), chain)


def _name(path: Path, top: Path) -> str:
    """A file in an extends cycle, named relative to the top-level recipe's directory."""
    return str(path.relative_to(top)) if path.is_relative_to(top) else str(path)


def merge(parent: Node, child: Node, ftype: FieldType | None) -> Node:
    """``child`` over ``parent``, by the rules of the field type (``None``: unknown key).

    Mappings merge key by key, lists are joined without repeating an item (or,
    for keyed lists, a child's item replaces the parent's of the same name),
    anything else is replaced by the child's value.
    """
    if isinstance(parent, Map) and isinstance(child, Map) and not _is_opaque(ftype):
        return _merge_maps(parent, child, ftype)
    if isinstance(parent, Seq) and isinstance(child, Seq) and isinstance(ftype, ListOf | None):
        if ftype is not None and ftype.merge is Merge.REPLACE:
            return child
        key = ftype.key if ftype is not None else None
        return Seq(child.mark, _merge_items(parent.items, child.items, key))
    return child


def _is_opaque(ftype: FieldType | None) -> bool:
    return ftype is not None and not isinstance(ftype, Struct | MapOf)


def _merge_maps(parent: Map, child: Map, ftype: FieldType | None) -> Map:
    entries = {entry.key: entry for entry in parent.entries}
    for entry in child.entries:
        old = entries.get(entry.key)
        if old is None:
            entries[entry.key] = entry
            continue
        sub: FieldType | None = None
        if isinstance(ftype, Struct):
            spec = ftype.field(entry.key)
            sub = spec.type if spec else None
        elif isinstance(ftype, MapOf):
            sub = ftype.value
        entries[entry.key] = Entry(entry.key, entry.key_mark, merge(old.value, entry.value, sub))
    return Map(child.mark, tuple(entries.values()))


def _merge_items(
    parent: tuple[Node, ...], child: tuple[Node, ...], key: str | None
) -> tuple[Node, ...]:
    items = list(parent)
    if key is not None:
        names = {_item_name(item, key): index for index, item in enumerate(items)}
        for item in child:
            name = _item_name(item, key)
            if name is not None and names.get(name) is not None:
                items[names[name]] = item
            else:
                items.append(item)
        return tuple(items)
    seen = {plain(item) for item in items}
    for item in child:
        if plain(item) not in seen:
            seen.add(plain(item))
            items.append(item)
    return tuple(items)


def _item_name(item: Node, key: str) -> object:
    if isinstance(item, Map):
        entry = item.get(key)
        if entry is not None and isinstance(entry.value, Scalar):
            return plain(entry.value)
    return None
