"""The guides in docs/ as data: their commands, expected output and markers.

The convention the guides follow (docs/README.md says it for their authors):

- Commands are in ```` ```console ```` blocks. A line starting with ``$ `` is a
  command; a command ending in ``\\`` goes on on the next line, and one with a
  here-document (``<<'EOF'``) goes on up to its terminator line. Every other
  non-blank line up to the next command is output the command must print, in
  that order (stdout and stderr together); ``...`` in such a line stands for
  anything, so dates and digests need not be spelt out.
- An HTML comment on the line before a block changes how it runs:
  ``<!-- guide: exit N -->`` (its commands must exit with N),
  ``<!-- guide: stop after output -->`` (a command that runs until stopped, such
  as a worker node's console: it passes once its expected output appeared, and
  is then stopped), ``<!-- guide: not run: REASON -->`` (only for what cannot
  run on a test host, such as ``git push`` to a real forge or ``systemctl`` where
  systemd is not PID 1; such a block may not run ``imagefactory``).
- Other blocks (``yaml``, ``ini``, ``text``, ``markdown``) show text and hold no
  commands; ``sh``/``bash``/``shell`` blocks are refused, so that no command
  escapes the test.

Pure parsing: nothing here runs a command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
#: The guides, in the order the README links them.
GUIDES = ("vo-manager.md", "ci-maintainer.md", "site-admin.md")

SHOWN_LANGUAGES = frozenset({"yaml", "ini", "text", "markdown", "xml"})
REFUSED_LANGUAGES = frozenset({"sh", "bash", "shell", "zsh", ""})
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*guide:\s*(?P<what>.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*(?P<q>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=q)")
_INLINE = re.compile(r"`(imagefactory(?: [^`]*)?)`")
#: Shell words that end one command's arguments.
_OPERATORS = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "&>", ")", "("})


class GuideError(ValueError):
    """A guide that breaks the convention, with its file and line."""


@dataclass(frozen=True)
class Command:
    """One ``$ `` command of a console block, and the output it must print."""

    guide: str
    line: int
    text: str
    expected: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"docs/{self.guide}:{self.line}"


@dataclass(frozen=True)
class Block:
    """A fenced block of a guide."""

    guide: str
    line: int
    language: str
    body: str
    commands: tuple[Command, ...] = ()
    exit_code: int = 0
    stop_after_output: bool = False
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"docs/{self.guide}:{self.line}"


@dataclass(frozen=True)
class Guide:
    name: str
    text: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)

    @property
    def console(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.language == "console")

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(c for b in self.console for c in b.commands)

    def inline_commands(self) -> list[tuple[int, str]]:
        """``imagefactory ...`` in inline code outside the blocks, with line numbers."""
        found = []
        inside = False
        for number, line in enumerate(self.text.splitlines(), 1):
            if _FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                found += [(number, m.group(1)) for m in _INLINE.finditer(line)]
        return found


def load(name: str, docs: Path = DOCS) -> Guide:
    path = docs / name
    return parse(name, path.read_text(encoding="utf-8"))


def parse(name: str, text: str) -> Guide:
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = _MARKER.match(line)
        if found:
            marker = found.group("what")
            i += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip():
                marker = None
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise GuideError(f"docs/{name}:{start}: the block opened here is never closed")
        blocks.append(_block(name, start, fence.group("lang"), lines[start:end], marker))
        marker = None
        i = end + 1
    return Guide(name, text, tuple(blocks))


def _block(name: str, fence_line: int, lang: str, body: list[str], marker: str | None) -> Block:
    where = f"docs/{name}:{fence_line}"
    if lang in REFUSED_LANGUAGES:
        raise GuideError(
            f"{where}: a ```{lang} block: commands go into ```console blocks with '$ ' prompts"
            " (so the guide test runs them); text that is not a command into ```text"
        )
    if lang != "console" and lang not in SHOWN_LANGUAGES:
        raise GuideError(f"{where}: unknown block language {lang!r}")
    exit_code, stop, not_run = 0, False, None
    if marker is not None:
        if lang != "console":
            raise GuideError(f"{where}: a guide marker before a ```{lang} block, which never runs")
        if match := re.fullmatch(r"exit (\d{1,3})", marker):
            exit_code = int(match.group(1))
        elif marker == "stop after output":
            stop = True
        elif match := re.fullmatch(r"not run: (.+)", marker):
            not_run = match.group(1)
        else:
            raise GuideError(f"{where}: unknown guide marker {marker!r}")
    commands = _commands(name, fence_line, body) if lang == "console" else ()
    if lang == "console" and not commands:
        raise GuideError(f"{where}: a console block without a '$ ' command")
    if stop and not all(c.expected for c in commands):
        raise GuideError(f"{where}: 'stop after output' needs the output to wait for")
    return Block(name, fence_line, lang, "\n".join(body), commands, exit_code, stop, not_run)


def _commands(name: str, fence_line: int, body: list[str]) -> tuple[Command, ...]:
    commands: list[Command] = []
    text: list[str] = []
    expected: list[str] = []
    first = 0
    j = 0

    def flush() -> None:
        if text:
            commands.append(Command(name, first, "\n".join(text), tuple(expected)))

    while j < len(body):
        line = body[j]
        if line.startswith("$ "):
            flush()
            first = fence_line + 1 + j
            text, expected = [line[2:]], []
            heredoc = _HEREDOC.search(line)
            while text[-1].endswith("\\") and j + 1 < len(body):
                j += 1
                text.append(body[j])
            if heredoc:
                word = heredoc.group("word")
                while True:
                    j += 1
                    if j == len(body):
                        raise GuideError(f"docs/{name}:{first}: here-document {word} never ends")
                    text.append(body[j])
                    if body[j] == word:
                        break
        elif line.strip():
            if not text:
                raise GuideError(f"docs/{name}:{fence_line + 1 + j}: output before any command")
            expected.append(line.strip())
        j += 1
    flush()
    return tuple(commands)


def imagefactory_invocations(command: str) -> list[list[str]]:
    """Every ``imagefactory ARGS`` a shell command runs, as argv lists (after the name).

    Here-document bodies are dropped first; the words are split as the shell
    splits them, and an invocation ends at a shell operator.
    """
    script = _drop_heredoc_bodies(command)
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    words = list(lexer)
    found: list[list[str]] = []
    k = 0
    while k < len(words):
        if Path(words[k]).name == "imagefactory" and (k == 0 or _starts_command(words[k - 1])):
            argv: list[str] = []
            k += 1
            while k < len(words) and words[k] not in _OPERATORS:
                argv.append(words[k])
                k += 1
            found.append(argv)
        else:
            k += 1
    return found


def _starts_command(previous: str) -> bool:
    return previous in _OPERATORS or previous in {"sudo", "exec", "timeout", "env", "then", "do"}


def _drop_heredoc_bodies(command: str) -> str:
    lines = command.split("\n")
    out: list[str] = []
    waiting: str | None = None
    for line in lines:
        if waiting is not None:
            if line == waiting:
                waiting = None
            continue
        out.append(line)
        match = _HEREDOC.search(line)
        if match:
            waiting = match.group("word")
            out[-1] = line[: match.start()] + line[match.end() :]
    return "\n".join(out)


def runs_imagefactory(block: Block) -> bool:
    return any(imagefactory_invocations(c.text) for c in block.commands)


def expected_pattern(line: str) -> re.Pattern[str]:
    """An expected output line as a pattern: literal text, ``...`` for anything."""
    return re.compile(".*?".join(re.escape(part) for part in line.split("...")))


def missing_output(expected: tuple[str, ...], output: str) -> str | None:
    """The first expected line not printed (in order), or None when all were."""
    lines = output.splitlines()
    at = 0
    for want in expected:
        pattern = expected_pattern(want)
        while at < len(lines) and not pattern.search(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None
