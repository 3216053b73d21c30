"""Load a YAML document into a tree of nodes that remember where they came from.

PyYAML composes the document (``yaml.compose`` with the safe loader's rules);
we build the values ourselves, so every key and value keeps its file, line,
column and key path, and so the YAML features a hostile recipe could abuse are
refused at their place instead of being expanded: anchors and aliases (alias
bombs), tags other than the plain core ones, duplicate keys, several documents
in one file and files larger than :data:`MAX_DOCUMENT_BYTES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from imagefactory.errors import Diagnostic, FileAccessError

#: A recipe larger than this is refused before it is parsed.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Lists and mappings nested deeper than this are refused (a recipe needs 4).
MAX_NESTING = 32

ScalarKind = Literal["string", "integer", "number", "boolean", "null", "date", "invalid"]

_TAG = "tag:yaml.org,2002:"
_SCALAR_KINDS: dict[str, ScalarKind] = {
    _TAG + "str": "string",
    _TAG + "int": "integer",
    _TAG + "float": "number",
    _TAG + "bool": "boolean",
    _TAG + "null": "null",
    # An unquoted date is a timestamp to YAML; we keep its text and let the
    # field say that it wants a string.
    _TAG + "timestamp": "date",
}
#: The tag we give the placeholder node that stands for a refused alias.
_ALIAS_TAG = "!imagefactory/alias"


@dataclass(frozen=True)
class Origin:
    """A document: its name as shown to the user and where it is on disk."""

    display: str
    path: Path


@dataclass(frozen=True)
class Mark:
    """A place in a document: 1-based line and column, and the key path there."""

    origin: Origin
    line: int
    column: int
    path: str

    def diagnostic(self, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(self.origin.display, self.line, self.column, self.path, message, hint)


@dataclass(frozen=True)
class Scalar:
    """A scalar value. ``raw`` is the text as written; ``kind`` says how YAML read it.

    A scalar of kind ``invalid`` stands for a value that was already reported
    (an alias, an unsupported tag); checks skip it silently.
    """

    mark: Mark
    value: str | int | float | bool | None
    raw: str
    kind: ScalarKind


@dataclass(frozen=True)
class Seq:
    mark: Mark
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Entry:
    """One key of a mapping: the key, where the key is, and its value."""

    key: str
    key_mark: Mark
    value: Node


@dataclass(frozen=True)
class Map:
    mark: Mark
    entries: tuple[Entry, ...]

    def get(self, key: str) -> Entry | None:
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None

    def without(self, key: str) -> Map:
        return Map(self.mark, tuple(e for e in self.entries if e.key != key))


Node = Scalar | Seq | Map


def plain(node: Node) -> Any:
    """The node's value without marks, for comparing nodes from different files."""
    if isinstance(node, Scalar):
        return (node.kind, node.value)
    if isinstance(node, Seq):
        return tuple(plain(item) for item in node.items)
    return tuple((entry.key, plain(entry.value)) for entry in node.entries)


def reported(node: Node) -> bool:
    """Whether the node stands for a value already reported (an alias, a refused tag)."""
    return isinstance(node, Scalar) and node.kind == "invalid"


def describe(node: Node) -> str:
    """How a node is named in "expected X, found Y" messages."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    if node.kind == "string":
        return repr(node.value)
    if node.kind == "null":
        return "nothing (null)"
    article = "an" if node.kind == "integer" else "a"
    return f"{article} {node.kind} ({node.raw})"


def load_document(
    path: Path, origin: Origin, *, empty_ok: bool = False, named_by_user: bool = True
) -> tuple[Node | None, list[Diagnostic]]:
    """Read and compose one YAML document; problems come back as diagnostics.

    The tree is ``None`` when nothing usable could be read (unreadable file,
    syntax error, empty document). An empty document is a problem unless
    ``empty_ok``, when it comes back as ``None`` with no diagnostics.

    A file the user named (``named_by_user``) that cannot be read raises
    :class:`FileAccessError` (no answer, exit 2); one another document names
    (a recipe's ``extends``) is a problem of that document, at its place.
    """
    top = Mark(origin, 1, 1, "")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        if named_by_user:
            raise FileAccessError.from_os_error(origin.display, "read", exc) from exc
        return None, [top.diagnostic(f"cannot read the file: {exc.strerror or exc}")]
    if len(data) > MAX_DOCUMENT_BYTES:
        return None, [top.diagnostic(f"the file is larger than {MAX_DOCUMENT_BYTES} bytes")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(data[: exc.start].decode("utf-8"), len(data[: exc.start]))
        return None, [Mark(origin, line, column, "").diagnostic("the file is not valid UTF-8")]
    try:
        # The reader checks the characters as it is made: a control character
        # raises here, before composing, so the loader is made inside the try.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        line, column = _position(text, getattr(exc, "position", 0))
        return None, [Mark(origin, line, column, "").diagnostic(f"YAML error: {exc}")]
    try:
        root = loader.get_single_node()
    except _TooDeepError as exc:
        return None, [Mark(origin, exc.line, exc.column, "").diagnostic(str(exc))]
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_diagnostic(origin, exc)]
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", 0)
        line, column = _position(text, position)
        return None, [Mark(origin, line, column, "").diagnostic(f"YAML error: {exc}")]
    finally:
        loader.dispose()
    if root is None:
        return None, [] if empty_ok else [
            top.diagnostic("the document is empty; expected a mapping")
        ]
    builder = _Builder(origin, loader.anchored)
    tree = builder.build(root, "")
    return tree, builder.diagnostics


def _position(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return line, column


def _syntax_diagnostic(origin: Origin, exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if exc.problem == "but found another document":
        message = "a recipe is one YAML document; found a second one ('---')"
    else:
        message = f"YAML syntax error: {exc.problem}"
        if exc.context and exc.context_mark:
            where = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            message += f" ({exc.context} started at {where})"
        elif exc.context:
            message += f" ({exc.context})"
    return Mark(origin, line, column, "").diagnostic(message)


class _Loader(yaml.SafeLoader):
    """The safe loader, composing only, that notes anchors and never follows aliases."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        #: id(node) -> anchor name, for every node that carried an anchor.
        self.anchored: dict[int, str] = {}
        self.depth = 0

    # The stubs leave the parser's event methods untyped.
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]
            # Stand-in for the alias, reported where the alias is. The anchored
            # node is never reached through it, so nothing can be expanded.
            return yaml.ScalarNode(_ALIAS_TAG, event.anchor, event.start_mark, event.end_mark)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = getattr(event, "anchor", None)
        # The composer (and our builder) recurse once per level: stop a deep
        # document here, with its place, before Python's recursion limit does.
        self.depth += 1
        if self.depth > MAX_NESTING:
            mark = event.start_mark
            raise _TooDeepError(mark.line + 1, mark.column + 1)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if anchor is not None and node is not None:
            self.anchored[id(node)] = anchor
        return node


class _TooDeepError(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__(f"lists and mappings nest deeper than {MAX_NESTING} levels")
        self.line = line
        self.column = column


class _Builder:
    """Turns composed YAML nodes into :data:`Node` trees, reporting what it refuses."""

    def __init__(self, origin: Origin, anchored: dict[int, str]) -> None:
        self.origin = origin
        self.anchored = anchored
        self.diagnostics: list[Diagnostic] = []

    def mark(self, node: yaml.Node, path: str) -> Mark:
        return Mark(self.origin, node.start_mark.line + 1, node.start_mark.column + 1, path)

    def build(self, node: yaml.Node, path: str) -> Node:
        mark = self.mark(node, path)
        anchor = self.anchored.get(id(node))
        if anchor is not None:
            self.diagnostics.append(
                mark.diagnostic(
                    f"YAML anchors are not allowed (found '&{anchor}')",
                    "repeat the value instead; recipes can share settings with 'extends'",
                )
            )
        if isinstance(node, yaml.MappingNode):
            return self.build_mapping(node, mark)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                return self.unsupported_tag(node, mark)
            items = tuple(
                self.build(item, f"{path}[{index}]") for index, item in enumerate(node.value)
            )
            return Seq(mark, items)
        if node.tag == _ALIAS_TAG:
            self.diagnostics.append(
                mark.diagnostic(
                    f"YAML aliases are not allowed (found '*{node.value}')",
                    "repeat the value instead; recipes can share settings with 'extends'",
                )
            )
            return Scalar(mark, None, "*" + node.value, "invalid")
        kind = _SCALAR_KINDS.get(node.tag)
        if kind is None:
            return self.unsupported_tag(node, mark)
        if kind in ("string", "date"):
            return Scalar(mark, node.value, node.value, kind)
        try:
            value = _CONSTRUCTOR.construct_object(node)
        except ValueError:  # an integer too long for int() (sys.get_int_max_str_digits)
            self.diagnostics.append(
                mark.diagnostic(f"the number is too long: {node.value[:20]}...")
            )
            return Scalar(mark, None, node.value, "invalid")
        return Scalar(mark, value, node.value, kind)

    def unsupported_tag(self, node: yaml.Node, mark: Mark) -> Scalar:
        tag = node.tag.replace(_TAG, "!!")
        self.diagnostics.append(mark.diagnostic(f"YAML tag '{tag}' is not allowed"))
        return Scalar(mark, None, "", "invalid")

    def build_mapping(self, node: yaml.MappingNode, mark: Mark) -> Node:
        if node.tag != _TAG + "map":
            return self.unsupported_tag(node, mark)
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, mark.path)
            if key is None:
                continue
            key_mark = self.mark(key_node, f"{mark.path}.{key}")
            first = entries.get(key)
            if first is not None:
                self.diagnostics.append(
                    key_mark.diagnostic(
                        f"duplicate key '{key}' (first at line {first.key_mark.line})"
                    )
                )
                continue
            entries[key] = Entry(key, key_mark, self.build(value_node, key_mark.path))
        return Map(mark, tuple(entries.values()))

    def key(self, node: yaml.Node, parent_path: str) -> str | None:
        """The key's text, or ``None`` (reported) when it cannot be a key."""
        text = node.value if isinstance(node, yaml.ScalarNode) else "?"
        mark = self.mark(node, f"{parent_path}.{text}")
        if node.tag == _TAG + "merge":
            message = "YAML merge keys ('<<') are not allowed"
        elif not isinstance(node, yaml.ScalarNode):
            message = "a key must be a plain name, found a list or mapping"
        elif node.tag == _ALIAS_TAG:
            message = f"YAML aliases are not allowed (found '*{node.value}')"
        elif node.tag not in _SCALAR_KINDS:
            message = f"YAML tag '{node.tag.replace(_TAG, '!!')}' is not allowed"
        else:
            # Keys are names: take them as written, so 'yes:' or '1:' stay text.
            return str(node.value)
        self.diagnostics.append(mark.diagnostic(message))
        return None


_CONSTRUCTOR = yaml.constructor.SafeConstructor()
