"""The building blocks of the recipe's field table.

Each field type knows four things about its values: how to check and convert a
YAML node (reporting every problem at its place), its default, its JSON Schema
and how the reference documentation names it. Field tables
(:mod:`imagefactory.recipe.fields`, :mod:`imagefactory.trust.fields`, ...) are
made of these, so the validator, the
defaults, the schema and the docs cannot disagree.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from imagefactory.errors import Diagnostic
from imagefactory.fields.yamlsource import Map, Mark, Node, Scalar, Seq, describe, reported


class Invalid:
    """The type of :data:`INVALID`."""

    def __repr__(self) -> str:
        return "INVALID"


#: What a parse returns for a value it reported as wrong.
INVALID: Final = Invalid()


class Problem(Exception):
    """Raised by a field's converter or check: what is wrong with the value."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Checker:
    """The diagnostics of one check of a document, and what its checks need to know.

    ``context`` is the document kind's own: for a recipe, the build host's
    :class:`~imagefactory.recipe.limits.BuildLimits`; nothing for most others.
    """

    def __init__(self, context: Any = None) -> None:
        self.context = context
        self.diagnostics: list[Diagnostic] = []

    def error(self, mark: Mark, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(mark.diagnostic(message, hint))


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """A "did you mean" hint for a misspelt ``word``, if one choice is close."""
    # A case slip ('CMS' for 'cms') is not a spelling distance question.
    folded = [c for c in choices if c.lower() == word.lower()]
    close = folded or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def quote_hint(raw: str) -> str:
    return f'quote it: "{raw}"'


def shorten(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, cut short if long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Merge(StrEnum):
    """How ``extends`` combines a parent's list with the child's."""

    CONCAT = "concat"  #: parent's items, then the child's new ones
    REPLACE = "replace"  #: the child's list replaces the parent's


class FieldType:
    """Base of the field types."""

    #: How the docs name the type ("string", "list of string", ...).
    label: str = "value"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        """Check ``node`` and return its value, or report and return :data:`INVALID`.

        ``partial`` is true while checking one file of a recipe that is
        combined with others through ``extends``: required keys and defaults
        wait for the whole recipe.
        """
        raise NotImplementedError

    def default_value(self, default: Any) -> Any:
        """The parsed value of the table's ``default`` (given in recipe form)."""
        return default

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def allowed(self) -> str:
        """What the docs list as the allowed values; empty when the description says it."""
        return ""


@dataclass(frozen=True)
class Text(FieldType):
    """A string, optionally matched against a pattern and converted.

    ``convert`` turns the text into the stored value (a size into bytes);
    ``check`` may also look at the node and the host's policy (an element
    allowlist, a source file next to the recipe). Both raise :class:`Problem`.
    """

    expects: str
    pattern: str | None = None
    max_length: int | None = None
    convert: Callable[[str], Any] | None = None
    check: Callable[[Any, Scalar, Checker], Any] | None = None
    #: Accept an unquoted YAML number, taking the text as written (``release: 12``).
    numbers: bool = False
    hint_for_number: Callable[[str], str] = quote_hint
    #: What the docs list as allowed, where the pattern does not say it.
    allowed_text: str = ""
    label: str = "string"
    #: A "did you mean" for a text the pattern refuses (a VO name in capitals).
    suggest: Callable[[str], str | None] | None = None

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if reported(node):
            return INVALID
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.kind == "string":
            text = node.value
        elif isinstance(node, Scalar) and self.numbers and node.kind in ("integer", "number"):
            text = node.raw
        else:
            quotable = isinstance(node, Scalar) and node.kind != "null"
            hint = self.hint_for_number(node.raw) if isinstance(node, Scalar) and quotable else None
            ck.error(node.mark, f"expected {self.expects}, found {describe(node)}", hint)
            return INVALID
        if self.max_length is not None and len(text) > self.max_length:
            ck.error(node.mark, f"expected at most {self.max_length} characters, found {len(text)}")
            return INVALID
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            hint = self.suggest(text) if self.suggest else None
            ck.error(node.mark, f"expected {self.expects}, found {shorten(text)}", hint)
            return INVALID
        try:
            value = self.convert(text) if self.convert else text
            return self.check(value, node, ck) if self.check else value
        except Problem as problem:
            ck.error(node.mark, problem.message, problem.hint)
            return INVALID

    def default_value(self, default: Any) -> Any:
        if default is None or self.convert is None:
            return default
        return self.convert(default)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": ["string", "number"] if self.numbers else "string"}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema

    def allowed(self) -> str:
        parts = [self.allowed_text] if self.allowed_text else []
        if self.pattern is not None:
            parts.append(f"`{self.pattern}`")
        if self.max_length is not None:
            parts.append(f"at most {self.max_length} characters")
        return ", ".join(parts)


@dataclass(frozen=True)
class Choice(FieldType):
    """One value of a :class:`~enum.StrEnum`."""

    enum: type[StrEnum]
    label: str = "string"
    #: Other names of a value that the hint maps to it (``amd64`` for ``x86_64``);
    #: they are suggested, never accepted, so one spelling is recorded everywhere.
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def values(self) -> list[str]:
        return [member.value for member in self.enum]

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if reported(node):
            return INVALID
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.kind == "string":
            if node.value in self.values:
                return self.enum(node.value)
            alias = dict(self.aliases).get(node.value.lower())
            hint = f"did you mean '{alias}'?" if alias else did_you_mean(node.value, self.values)
        else:
            hint = None
        ck.error(
            node.mark, f"expected one of {', '.join(self.values)}; found {describe(node)}", hint
        )
        return INVALID

    def default_value(self, default: Any) -> Any:
        return None if default is None else self.enum(default)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": self.values}

    def allowed(self) -> str:
        return ", ".join(f"`{value}`" for value in self.values)


@dataclass(frozen=True)
class ListOf(FieldType):
    """A list. Items equal to an earlier one are dropped, order kept.

    With ``key``, items are mappings named by that field (a file by its path):
    two items with the same name are an error, and ``extends`` replaces a
    parent's item by the child's of the same name.
    """

    item: FieldType
    key: str | None = None
    merge: Merge = Merge.CONCAT

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"list of {self.item.label}"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if not isinstance(node, Seq):
            hint = None
            if isinstance(node, Scalar) and node.kind == "string":
                hint = f"write a single item as a list: [{node.raw}]"
            if not reported(node):
                ck.error(node.mark, f"expected a {self.label}, found {describe(node)}", hint)
            return INVALID
        values: list[Any] = []
        seen: dict[Any, Node] = {}
        for item in node.items:
            # An item of a list is always whole: it is never combined across files.
            value = self.item.parse(item, ck, partial=False)
            if value is INVALID:
                continue
            if self.key is None:
                if value not in seen:
                    seen[value] = item
                    values.append(value)
                continue
            name = value.get(self.key)
            if name is None:  # its name was invalid, and reported
                values.append(value)
                continue
            first = seen.get(name)
            if first is not None:
                entry = item.get(self.key) if isinstance(item, Map) else None
                ck.error(
                    entry.value.mark if entry else item.mark,
                    f"duplicate {self.key} {shorten(str(name))} (first at line {first.mark.line})",
                )
                continue
            seen[name] = item
            values.append(value)
        return values

    def default_value(self, default: Any) -> Any:
        return [self.item.default_value(value) for value in default or ()]

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema()}
        if self.key is None and not isinstance(self.item, Struct):
            schema["uniqueItems"] = True
        return schema

    def allowed(self) -> str:
        return self.item.allowed()


@dataclass(frozen=True)
class MapOf(FieldType):
    """A mapping from string keys (checked by ``key``) to values of one type."""

    key: Text
    value: FieldType
    label: str = "mapping of string to string"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if not isinstance(node, Map):
            if not reported(node):
                ck.error(node.mark, f"expected a {self.label}, found {describe(node)}")
            return INVALID
        values: dict[str, Any] = {}
        for entry in node.entries:
            key = self.key.parse(
                Scalar(entry.key_mark, entry.key, entry.key, "string"), ck, partial
            )
            value = self.value.parse(entry.value, ck, partial)
            if key is not INVALID and value is not INVALID:
                values[key] = value
        return values

    def default_value(self, default: Any) -> Any:
        return dict(default or {})

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "propertyNames": self.key.json_schema(),
            "additionalProperties": self.value.json_schema(),
        }

    def allowed(self) -> str:
        return f"keys {self.key.allowed()}; values {self.value.allowed()}"


@dataclass(frozen=True)
class OneOrMany(FieldType):
    """One string or a list of them."""

    item: Text

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"{self.item.label} or list of {self.item.label}"

    def nodes(self, node: Node, ck: Checker) -> list[Node]:
        """The item nodes: the node itself or the list's items (a mapping is reported)."""
        if isinstance(node, Seq):
            return list(node.items)
        if isinstance(node, Map):
            ck.error(node.mark, f"expected a {self.label}, found {describe(node)}")
            return []
        return [node]

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        values = [self.item.parse(item, ck, partial) for item in self.nodes(node, ck)]
        return [value for value in values if value is not INVALID]

    def default_value(self, default: Any) -> Any:
        return list(default or ())

    def json_schema(self) -> dict[str, Any]:
        item = self.item.json_schema()
        return {"anyOf": [item, {"type": "array", "items": item}]}

    def allowed(self) -> str:
        return self.item.allowed()


@dataclass(frozen=True)
class Field:
    """One key of a mapping in the recipe: its name, type, default and help."""

    name: str
    type: FieldType
    help: str
    required: bool = False
    #: The default in recipe form (``"2G"``, ``["qcow2"]``); ``None`` for no value.
    default: Any = None
    #: Read while loading (``extends``), not part of the resolved recipe.
    loader: bool = False

    def default_json(self) -> Any:
        """The default as the schema and the docs show it."""
        if self.default is not None:
            return self.default
        if isinstance(self.type, ListOf | OneOrMany):
            return []
        if isinstance(self.type, MapOf):
            return {}
        return None


@dataclass(frozen=True)
class Rule:
    """A check across the fields of one mapping, documented by ``help``."""

    help: str
    check: Callable[[dict[str, Any], Map, Checker], None]
    #: Only meaningful for the whole recipe, after ``extends`` (a parent may be incomplete).
    whole_only: bool = False


@dataclass(frozen=True)
class Struct(FieldType):
    """A mapping with a fixed set of keys."""

    fields: tuple[Field, ...]
    expects: str = "a mapping"
    #: Groups of keys of which exactly one must be given.
    exactly_one: tuple[tuple[str, ...], ...] = ()
    rules: tuple[Rule, ...] = ()
    #: Extra JSON Schema keywords (derived, e.g. from the vocabularies).
    schema_extra: Callable[[], dict[str, Any]] | None = None
    label: str = "mapping"

    def field(self, name: str) -> Field | None:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        return None

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if not isinstance(node, Map):
            if not reported(node):
                ck.error(node.mark, f"expected {self.expects}, found {describe(node)}")
            return INVALID
        values: dict[str, Any] = {}
        names = [spec.name for spec in self.fields]
        for entry in node.entries:
            spec = self.field(entry.key)
            if spec is None:
                ck.error(
                    entry.key_mark,
                    f"unknown key '{entry.key}'",
                    did_you_mean(entry.key, names) or f"expected one of {', '.join(names)}",
                )
                continue
            if spec.loader:
                continue
            value = spec.type.parse(entry.value, ck, partial)
            if value is not INVALID:
                values[spec.name] = value
        for group in self.exactly_one:
            given = [node.get(name) for name in group]
            present = [entry for entry in given if entry is not None]
            either = " or ".join(f"'{name}'" for name in group)
            if not present:
                ck.error(node.mark, f"expected one of {either}, found neither")
            for extra in present[1:]:
                ck.error(extra.key_mark, f"expected only one of {either}, found both")
        if not partial:
            for spec in self.fields:
                if spec.loader or node.get(spec.name) is not None:
                    continue
                if spec.required:
                    ck.error(node.mark, f"missing required key '{spec.name}'")
                else:
                    values[spec.name] = spec.type.default_value(spec.default)
        for rule in self.rules:
            if not (partial and rule.whole_only):
                rule.check(values, node, ck)
        return values

    def default_value(self, default: Any) -> Any:
        return {
            spec.name: spec.type.default_value(spec.default)
            for spec in self.fields
            if not spec.loader
        }

    def json_schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for spec in self.fields:
            schema = {"description": spec.help, **spec.type.json_schema()}
            default = spec.default_json()
            if default is not None and not isinstance(spec.type, Struct):
                schema["default"] = default
            properties[spec.name] = schema
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        required = [spec.name for spec in self.fields if spec.required]
        loaders = [spec.name for spec in self.fields if spec.loader]
        if required and loaders:
            # A file that extends others may leave required keys to them.
            schema["if"] = {"not": {"anyOf": [{"required": [name]} for name in loaders]}}
            schema["then"] = {"required": required}
        elif required:
            schema["required"] = required
        if self.exactly_one:
            schema["allOf"] = [
                {"oneOf": [{"required": [name]} for name in group]} for group in self.exactly_one
            ]
        if self.schema_extra is not None:
            extra = self.schema_extra()
            schema["allOf"] = schema.get("allOf", []) + extra.pop("allOf", [])
            schema.update(extra)
        return schema


@dataclass(frozen=True)
class Flag(FieldType):
    """``true`` or ``false``; a quoted ``"yes"`` or a number is refused, not guessed."""

    label: str = "boolean"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if reported(node):
            return INVALID
        if isinstance(node, Scalar) and node.kind == "boolean":
            return node.value
        ck.error(node.mark, f"expected true or false, found {describe(node)}")
        return INVALID

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def allowed(self) -> str:
        return "`true`, `false`"


@dataclass(frozen=True)
class Count(FieldType):
    """A whole number from ``minimum`` to ``maximum``."""

    minimum: int
    maximum: int
    label: str = "integer"

    def parse(self, node: Node, ck: Checker, partial: bool) -> Any:
        if reported(node):
            return INVALID
        if (
            isinstance(node, Scalar)
            and node.kind == "integer"
            and isinstance(node.value, int)
            and self.minimum <= node.value <= self.maximum
        ):
            return node.value
        ck.error(
            node.mark,
            f"expected a whole number from {self.minimum} to {self.maximum},"
            f" found {describe(node)}",
        )
        return INVALID

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def allowed(self) -> str:
        return f"{self.minimum} to {self.maximum}"
