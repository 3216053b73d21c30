"""xl domain configuration files, read with libxlu's grammar (``libxlu_cfg_[ly].*``).

The lexer: names are ``[a-z][._0-9a-z]*``; strings are ``"..."`` or ``'...'`` on
one line; numbers decimal or ``0x`` hex; ``#`` starts a comment; a newline or
``;`` ends a statement; ``=``, ``+=``, ``[``, ``]``, ``,`` are tokens. Anything
else makes xl reject the whole file, so it is refused here too. The grammar:
``NAME = VALUE`` or ``NAME += VALUE`` where a value is an atom or a list
(lists may nest; newlines are allowed inside them).

Read more strictly than xl, so that the gate and xl cannot disagree: a name
set twice, ``+=`` (xl appends to an earlier value), and a backslash in a
string (xl interprets escape sequences) are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagefactory.gate.text import shown

Value = str | int | list["Value"]

_TOKEN = re.compile(
    r"""(?P<space>[ \t\r]+)
      | (?P<comment>\#[^\n]*)
      | (?P<newline>\n)
      | (?P<name>[a-z][._0-9a-z]*)
      | (?P<number>0x[0-9a-fA-F]+|[0-9]+)
      | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
      | (?P<op>\+=|=|\[|\]|,|;)
    """,
    re.VERBOSE,
)


class XlConfigError(ValueError):
    """The file is not read the same way by xl and the gate (the message says where)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    line = 1
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            near = text[pos : pos + 20]
            if near[:1] in "\"'":
                raise XlConfigError(
                    f"line {line}: string {shown(near)}: unterminated, multi-line or with a"
                    " backslash (xl reads escapes; not accepted)"
                )
            raise XlConfigError(f"line {line}: {shown(near)}: not xl configuration syntax")
        kind = match.lastgroup or ""
        if kind == "newline":
            out.append(_Token("end", "\n", line))
            line += 1
        elif kind not in ("space", "comment"):
            word = match.group()
            out.append(_Token("end" if word == ";" else kind, word, line))
        pos = match.end()
    out.append(_Token("end", "", line))
    return out


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def skip_newlines(self) -> None:
        while self.peek().kind == "end" and self.peek().text == "\n":
            self.take()

    def value(self, depth: int = 0) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "number":
            return int(token.text, 0)
        if token.text == "[" and depth < 8:
            items: list[Value] = []
            self.skip_newlines()
            if self.peek().text == "]":
                self.take()
                return items
            while True:
                items.append(self.value(depth + 1))
                self.skip_newlines()
                closing = self.take()
                if closing.text == "]":
                    return items
                if closing.text != ",":
                    raise XlConfigError(f"line {closing.line}: expected , or ] in a list")
                self.skip_newlines()
                if self.peek().text == "]":  # a trailing comma, as libxlu allows
                    self.take()
                    return items
        raise XlConfigError(f"line {token.line}: {shown(token.text)}: expected a value")


def parse_xl_config(text: str) -> dict[str, Value]:
    """The settings of an xl configuration; raises :class:`XlConfigError`."""
    parser = _Parser(_tokens(text))
    out: dict[str, Value] = {}
    while True:
        token = parser.take()
        if token.kind == "end":
            if token.text == "":
                return out
            continue
        if token.kind != "name":
            raise XlConfigError(f"line {token.line}: {shown(token.text)}: expected a setting name")
        op = parser.take()
        if op.text == "+=":
            raise XlConfigError(
                f"line {op.line}: {token.text} +=: appends to an earlier value; write one"
                f" {token.text} = [...]"
            )
        if op.text != "=":
            raise XlConfigError(f"line {op.line}: expected = after {token.text}")
        value = parser.value()
        end = parser.take()
        if end.kind != "end":
            raise XlConfigError(f"line {end.line}: {shown(end.text)} after {token.text}'s value")
        if token.text in out:
            raise XlConfigError(f"line {token.line}: {token.text} is set more than once")
        out[token.text] = value
        if end.text == "":
            return out
