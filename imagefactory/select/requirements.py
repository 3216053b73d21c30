"""``--require``: what a batch job needs of its image, over the image's labels.

The grammar, one clause per comma, every clause must hold::

    requirements := clause ("," clause)*
    clause       := KEY OP VALUE ("|" VALUE)*
    OP           := "=" | "!=" | ">=" | ">" | "<=" | "<"

``vo=atlas|cms`` is a set (any of them), ``arch!=i386|aarch64`` excludes each;
``>=``, ``>``, ``<=`` and ``<`` compare ``release`` and ``version`` by their
dotted components as numbers (``release>=12``, ``release<24.04``,
``version>=1.10``, which is above ``1.9``) and take one value. Spaces around
tokens are ignored. Keys are the label fields in :data:`KEYS`; a value of a
closed vocabulary (distro, arch, model, root policy, ...) must be one of its
words, a VO one the site policy knows. Everything is ASCII: a look-alike
letter, a control character or NUL is refused at its column, like an unknown
key or value (with "did you mean").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from imagefactory.catalog.descriptor import NAME_RE, VERSION_RE, VO_RE
from imagefactory.catalog.versions import version_key
from imagefactory.errors import UsageError
from imagefactory.fields.types import did_you_mean
from imagefactory.model.reason import printable
from imagefactory.vocab import (
    ARCH_ALIASES,
    Arch,
    BootMode,
    Contextualisation,
    DiskFormat,
    Distro,
    FsAccess,
    RootPolicy,
    WorkerNodeModel,
)

#: A requirement string longer than this is refused unread (a prologue's is a line).
MAX_LENGTH = 4096
#: Values in one set; clauses in one requirement.
MAX_VALUES = 64
MAX_CLAUSES = 64

EQUALITY = ("=", "!=")
ORDERING = (">=", ">", "<=", "<")
#: Longest first, so ``>=`` is not read as ``>`` followed by ``=...``.
_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")
_KEY_RE = re.compile(r"[a-z_]+")
_NUMERIC_RE = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,7}$")


class Kind(StrEnum):
    """How a key's value is read and compared."""

    WORD = "word"  #: one of a closed vocabulary
    NAME = "name"  #: a name matching a pattern
    VERSION = "version"  #: a version: equality, or ordering by dotted components


@dataclass(frozen=True)
class Key:
    """One key a requirement may name: the label it reads and how."""

    name: str
    label: str
    kind: Kind
    description: str
    #: The closed vocabulary (WORD), or ``None``.
    words: tuple[str, ...] | None = None
    #: The pattern of a NAME or VERSION value.
    pattern: re.Pattern[str] | None = None
    #: The label holds a list: ``=`` means "one of the image's values is in the set".
    many: bool = False


def _words(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


_CODENAMES = tuple(r.codename for d in Distro for r in d.releases)
_RELEASES = tuple(r.version for d in Distro for r in d.releases)

KEYS: Mapping[str, Key] = {
    k.name: k
    for k in (
        Key("name", "image.name", Kind.NAME, "the image's name", pattern=NAME_RE),
        Key("version", "image.version", Kind.VERSION, "the image's version", pattern=VERSION_RE),
        Key("vo", "vo", Kind.NAME, "a VO the image is for", pattern=VO_RE, many=True),
        Key("distro", "os.distro", Kind.WORD, "the distribution", _words(Distro)),
        Key(
            "release",
            "os.version",
            Kind.VERSION,
            "the distribution release, by number (or codename, with = and !=)",
            pattern=_NUMERIC_RE,
        ),
        Key("codename", "os.codename", Kind.WORD, "the release's codename", _CODENAMES),
        Key("arch", "os.arch", Kind.WORD, "the CPU architecture", _words(Arch)),
        Key("boot_mode", "disk.boot_mode", Kind.WORD, "how firmware starts it", _words(BootMode)),
        Key("format", "disk.format", Kind.WORD, "the disk format", _words(DiskFormat)),
        Key("model", "trust.model", Kind.WORD, "the worker-node model", _words(WorkerNodeModel)),
        Key("root_policy", "trust.root_policy", Kind.WORD, "who may be root", _words(RootPolicy)),
        Key(
            "fs_access",
            "trust.fs_access",
            Kind.WORD,
            "a site file system it may mount",
            _words(FsAccess),
            many=True,
        ),
        Key(
            "contextualisation",
            "trust.contextualisation",
            Kind.WORD,
            "how it is contextualised",
            _words(Contextualisation),
        ),
    )
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a requirement string, at its 1-based column."""

    column: int
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"column {self.column}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "message": self.message, "hint": self.hint}


class RequirementError(UsageError):
    """A ``--require`` string cannot be read; every problem names its column."""

    def __init__(self, text: str, problems: list[Problem]) -> None:
        count = len(problems)
        super().__init__(
            f"--require {printable(_shown(text))}: {count} problem{'s' if count != 1 else ''}",
            hint="see 'imagefactory select --help' for the keys and the grammar",
        )
        self.problems = problems

    def render(self) -> str:
        lines = [self.message, *("  " + p.render() for p in self.problems)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "problems": [p.to_dict() for p in self.problems]}


def _shown(text: str) -> str:
    # ascii(): a look-alike letter shows as its code point, not as the letter it mimics.
    return ascii(text if len(text) <= 120 else text[:120] + "...")


@dataclass(frozen=True)
class Clause:
    """``key op value|value...``, where it was written, and how to test an image."""

    key: Key
    op: str
    values: tuple[str, ...]
    text: str

    def failure(self, facts: Mapping[str, Any]) -> str | None:
        """Why the image with ``facts`` (label path -> value) fails this clause, or ``None``."""
        have = facts.get(self.key.label)
        if self.op in ORDERING:
            return self._ordering(have, facts)
        if self.key.many:
            owned = set(have) if isinstance(have, (list, tuple)) else set()
            hit = bool(owned & set(self.values))
            shown = ",".join(sorted(owned)) or "none"
        else:
            candidates = {have}
            if self.key.name == "release":
                candidates.add(facts.get("os.codename"))
            hit = bool(candidates & set(self.values))
            shown = str(have)
        if hit == (self.op == "="):
            return None
        return f"{self.text}: the image's {self.key.name} is {printable(shown)}"

    def _ordering(self, have: Any, facts: Mapping[str, Any]) -> str | None:
        wanted = self.values[0]
        ours: Any
        theirs: Any
        if self.key.name == "release":
            ours, theirs = release_key(have), release_key(wanted)
        else:
            ours, theirs = version_key(have) if isinstance(have, str) else None, version_key(wanted)
        if ours is None:
            return f"{self.text}: the image's {self.key.name} {printable(repr(have))} is no number"
        ok = {
            ">=": ours >= theirs,
            ">": ours > theirs,
            "<=": ours <= theirs,
            "<": ours < theirs,
        }[self.op]
        return None if ok else f"{self.text}: the image's {self.key.name} is {printable(have)}"


def release_key(text: Any) -> tuple[int, ...] | None:
    """A release number's components as integers (``22.04`` -> ``(22, 4)``), or ``None``.

    Trailing zero components are dropped, so ``12`` and ``12.0`` are equal
    and ``12`` is below ``12.1``.
    """
    if not isinstance(text, str) or not _NUMERIC_RE.fullmatch(text):
        return None
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True)
class Requirements:
    """Every clause of one or more ``--require`` strings (all must hold)."""

    clauses: tuple[Clause, ...] = ()

    def failures(self, facts: Mapping[str, Any]) -> list[str]:
        return [f for c in self.clauses if (f := c.failure(facts)) is not None]

    def __str__(self) -> str:
        return ",".join(c.text for c in self.clauses)


def parse_requirements(texts: Sequence[str], vos: Sequence[str] | None = None) -> Requirements:
    """Read ``--require`` strings; ``vos`` (the site policy's) is the VO vocabulary.

    Raises :class:`RequirementError` naming every problem of the first bad string.
    """
    clauses: list[Clause] = []
    for text in texts:
        clauses += _parse_one(text, vos)
    if len(clauses) > MAX_CLAUSES:
        raise RequirementError(",".join(texts), [Problem(1, f"more than {MAX_CLAUSES} clauses")])
    return Requirements(tuple(clauses))


def _parse_one(text: str, vos: Sequence[str] | None) -> list[Clause]:
    if len(text) > MAX_LENGTH:
        raise RequirementError(
            text, [Problem(MAX_LENGTH + 1, f"longer than {MAX_LENGTH} characters")]
        )
    bad = _bad_character(text)
    if bad is not None:
        raise RequirementError(text, [bad])
    if not text.strip():
        raise RequirementError(
            text, [Problem(1, "an empty requirement", "give KEY=VALUE, e.g. distro=debian")]
        )
    problems: list[Problem] = []
    clauses: list[Clause] = []
    start = 0
    for raw in text.split(","):
        clause = _clause(raw, start + 1, vos, problems)
        if clause is not None:
            clauses.append(clause)
        start += len(raw) + 1
    if problems:
        raise RequirementError(text, problems)
    return clauses


def _bad_character(text: str) -> Problem | None:
    for index, char in enumerate(text):
        if char == "\0":
            return Problem(index + 1, "a NUL character")
        if not (char.isascii() and (char.isprintable() or char == " ")):
            return Problem(
                index + 1,
                f"character U+{ord(char):04X} is not printable ASCII",
                "requirements are ASCII: a look-alike letter is another key or value",
            )
    return None


def _clause(
    raw: str, column: int, vos: Sequence[str] | None, problems: list[Problem]
) -> Clause | None:
    lead = len(raw) - len(raw.lstrip())
    body = raw.strip()
    col = column + lead
    if not body:
        problems.append(Problem(col, "an empty clause (two commas, or a comma at an end)"))
        return None
    key_match = _KEY_RE.match(body)
    key_text = key_match.group() if key_match else ""
    rest = body[len(key_text) :]
    stripped = rest.lstrip()
    op = next((o for o in _OPERATORS if stripped.startswith(o)), None)
    op_col = col + len(key_text) + (len(rest) - len(stripped))
    if not key_text:
        problems.append(Problem(col, f"expected a key, found {printable(repr(body[:20]))}"))
        return None
    key = KEYS.get(key_text)
    if key is None or op is None:
        if key is None:
            problems.append(
                Problem(
                    col,
                    f"unknown key {key_text!r}",
                    did_you_mean(key_text, list(KEYS)) or "keys: " + ", ".join(KEYS),
                )
            )
        if op is None:
            problems.append(
                Problem(
                    op_col,
                    f"expected one of {', '.join(_OPERATORS)} after {key_text!r},"
                    f" found {printable(repr(stripped[:20]))}",
                )
            )
        return None
    value_text = stripped[len(op) :]
    value_col = op_col + len(op) + (len(value_text) - len(value_text.lstrip()))
    if op in ORDERING and key.kind is not Kind.VERSION:
        problems.append(
            Problem(
                op_col,
                f"{op!r} compares versions; {key.name} takes = or !=",
                "ordered keys: "
                + ", ".join(k.name for k in KEYS.values() if k.kind is Kind.VERSION),
            )
        )
        return None
    values = _values(key, op, text=value_text, column=value_col, vos=vos, problems=problems)
    if values is None:
        return None
    return Clause(key, op, values, f"{key.name}{op}{'|'.join(values)}")


def _values(
    key: Key,
    op: str,
    *,
    text: str,
    column: int,
    vos: Sequence[str] | None,
    problems: list[Problem],
) -> tuple[str, ...] | None:
    parts = text.strip().split("|")
    if len(parts) > MAX_VALUES:
        problems.append(Problem(column, f"more than {MAX_VALUES} values in one set"))
        return None
    if op in ORDERING and len(parts) > 1:
        problems.append(Problem(column, f"{op!r} takes one value, found a set"))
        return None
    out: list[str] = []
    col = column
    ok = True
    for part in parts:
        value = part.strip()
        here = col + (len(part) - len(part.lstrip()))
        found = _check_value(key, op, value, vos)
        if found is not None:
            message, hint = found
            problems.append(Problem(here, message, hint))
            ok = False
        elif value not in out:
            out.append(value)
        col += len(part) + 1
    return tuple(out) if ok else None


def _check_value(
    key: Key, op: str, value: str, vos: Sequence[str] | None
) -> tuple[str, str | None] | None:
    """``(message, hint)`` if ``value`` is not a value of ``key`` for ``op``, else ``None``."""
    shown = printable(repr(value if len(value) <= 40 else value[:40] + "..."))
    if not value:
        return f"{key.name}: an empty value", f"give {key.name}{op}VALUE"
    if key.kind is Kind.WORD:
        words = list(key.words or ())
        if value in words:
            return None
        alias = dict(ARCH_ALIASES).get(value) if key.name == "arch" else None
        hint = f"did you mean '{alias}'?" if alias else did_you_mean(value, words)
        return f"{key.name}: {shown} is not one of {', '.join(words)}", hint
    if key.name == "release":
        if op in ORDERING:
            if _NUMERIC_RE.fullmatch(value):
                return None
            return (
                f"release: {shown} is not a release number to compare",
                "compare numbers, e.g. release>=12 or release<24.04",
            )
        known = [*_RELEASES, *_CODENAMES]
        if value in known:
            return None
        return f"release: {shown} is not a known release", did_you_mean(value, known) or (
            "releases: " + ", ".join(known)
        )
    pattern = key.pattern
    if pattern is not None and not pattern.fullmatch(value):
        return f"{key.name}: {shown} is not a {key.name}", None
    if key.name == "vo" and vos is not None and value not in vos:
        known_vos = sorted(vos)
        return (
            f"vo: {shown} is not a VO of the site policy",
            did_you_mean(value, known_vos) or "policy VOs: " + (", ".join(known_vos) or "none"),
        )
    return None
