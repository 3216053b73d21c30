"""The guides in docs/ against the code, without running them (fast drift checks).

Every ``imagefactory`` command of a guide's console blocks must parse with the
real argument parser; every ``imagefactory ...`` named in the prose must be a
real subcommand with real options; the blocks that are not run are few,
listed here, and run no imagefactory command; files a guide writes that the
repository ships (the example recipe) must be the shipped ones, byte for byte.
The integration test (test_guides.py) then runs every command.
"""

from __future__ import annotations

import argparse
import configparser
import re
import shlex

import pytest

from imagefactory.cli import build_parser
from tests.docs.guides import (
    DOCS,
    GUIDES,
    REPO,
    GuideError,
    imagefactory_invocations,
    load,
    missing_output,
    parse,
    runs_imagefactory,
)

#: Every block a guide does not run, by guide and its first command: only what a
#: test host cannot do. test_guides.NOT_RUN says what the test does instead.
CLONE = 'git clone "$IMAGEFACTORY_GIT" /opt/imagefactory'
NOT_RUN = {
    ("vo-manager.md", CLONE),
    (
        "vo-manager.md",
        "git push -o merge_request.create -o merge_request.target=main origin add-zstd",
    ),
    ("ci-maintainer.md", CLONE),
    ("site-admin.md", CLONE),
    (
        "site-admin.md",
        "systemctl daemon-reload && systemctl enable --now imagefactory-catalog-refresh.timer",
    ),
    ("site-admin.md", "systemctl daemon-reload && systemctl enable --now imagefactory-pull.timer"),
    ("site-admin.md", "systemctl restart libvirtd"),
}

SHIPPED = {
    "atlas-wn-debian12.yaml": REPO / "recipes" / "atlas-wn-debian12.yaml",
    "files/atlas-wn.conf": REPO / "recipes" / "files" / "atlas-wn.conf",
}
_WRITE = re.compile(r"^(?:.*&& )?cat > (?P<path>\S+) <<'EOF'\n(?P<body>.*\n)EOF$", re.S)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parse(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # --version, --help
        if exc.code != 0:
            raise AssertionError(f"imagefactory {shlex.join(argv)}: exit {exc.code}") from exc


def test_the_guides_exist_and_the_readme_links_them() -> None:
    readme = (REPO / "README.md").read_text()
    for name in GUIDES:
        assert (DOCS / name).is_file()
        assert f"(docs/{name})" in readme, f"README.md does not link docs/{name}"


@pytest.mark.parametrize("name", GUIDES)
def test_every_imagefactory_command_parses(name: str) -> None:
    guide = load(name)
    commands = [(c, argv) for c in guide.commands for argv in imagefactory_invocations(c.text)]
    assert len(commands) >= 5, f"{name} runs almost no imagefactory command"
    for command, argv in commands:
        try:
            _parse(argv)
        except Exception as exc:  # UsageError, with the guide's place
            shown = f"imagefactory {shlex.join(argv)}"
            raise AssertionError(f"{command.where}: {shown}: {exc}") from exc


@pytest.mark.parametrize("name", GUIDES)
def test_commands_in_shown_pipeline_snippets_parse(name: str) -> None:
    """A CI job's ``- imagefactory ...`` line in a yaml block cannot run here: it must parse."""
    for block in load(name).blocks:
        if block.language != "yaml":
            continue
        for offset, line in enumerate(block.body.splitlines(), 1):
            found = re.match(r"^\s*-\s+(imagefactory\s.*)$", line)
            if found:
                for argv in imagefactory_invocations(found.group(1)):
                    try:
                        _parse([a.replace("$RECIPE", "x") for a in argv])
                    except Exception as exc:
                        where = f"docs/{name}:{block.line + offset}"
                        raise AssertionError(f"{where}: {found.group(1)}: {exc}") from exc


@pytest.mark.parametrize("name", GUIDES)
def test_prose_names_real_subcommands_and_options(name: str) -> None:
    top = build_parser()
    for line, text in load(name).inline_commands():
        words = text.split()[1:]
        if not words:  # the program's name alone
            continue
        parser = top
        while words and words[0] in _subcommands(parser):
            parser = _subcommands(parser)[words.pop(0)]
        if _subcommands(parser) and not (words and words[0].startswith("-")):
            raise AssertionError(f"docs/{name}:{line}: `{text}`: no such subcommand")
        known = {o for a in parser._actions for o in a.option_strings}
        for word in words:
            option = word.split("=", 1)[0].strip("[]")
            if word == "--":
                break
            if option.startswith("-") and option not in known:
                raise AssertionError(f"docs/{name}:{line}: `{text}`: no option {option}")


def test_only_the_listed_blocks_are_not_run() -> None:
    found = set()
    for name in GUIDES:
        for block in load(name).console:
            if block.not_run is None:
                continue
            found.add((name, block.commands[0].text))
            assert not runs_imagefactory(block), (
                f"{block.where}: a block marked 'not run' runs imagefactory: every imagefactory"
                " command of a guide must run in the test"
            )
    assert found == NOT_RUN


@pytest.mark.parametrize("name", GUIDES)
def test_files_the_guides_write_are_the_shipped_ones(name: str) -> None:
    for command in load(name).commands:
        written = _WRITE.match(command.text)
        if written and written["path"] in SHIPPED:
            assert written["body"] == SHIPPED[written["path"]].read_text(), (
                f"{command.where}: {written['path']} differs from the shipped"
                f" {SHIPPED[written['path']].relative_to(REPO)} (the build would miss the cache)"
            )


def test_shipped_units_run_real_commands() -> None:
    units = sorted((REPO / "contrib" / "systemd").glob("*.service"))
    assert units
    for path in units:
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.read_string(path.read_text())
        argv = shlex.split(unit["Service"]["ExecStart"])
        assert argv[0] == "/usr/local/bin/imagefactory", path.name
        _parse([re.sub(r"\$\{\w+\}", "/x", a) for a in argv[1:]])
        assert (path.with_suffix(".timer")).is_file(), f"{path.name} has no timer"


# -- the convention itself ------------------------------------------------------


def test_a_console_block_is_commands_and_their_output() -> None:
    guide = parse(
        "g.md",
        "<!-- guide: exit 1 -->\n```console\n$ imagefactory validate a.yaml \\\n  b.yaml\n"
        "invalid recipe\n  a.yaml:1:1: ...\n$ cat > x <<'EOF'\n$ not a command\nEOF\n```\n",
    )
    (block,) = guide.console
    assert block.exit_code == 1
    first, second = block.commands
    assert first.text == "imagefactory validate a.yaml \\\n  b.yaml"
    assert first.expected == ("invalid recipe", "a.yaml:1:1: ...")
    assert first.line == 3
    assert second.text == "cat > x <<'EOF'\n$ not a command\nEOF"
    assert imagefactory_invocations(first.text) == [["validate", "a.yaml", "b.yaml"]]
    assert imagefactory_invocations(second.text) == []


def test_invocations_are_found_after_shell_operators_only() -> None:
    found = imagefactory_invocations(
        "cd imagefactory && imagefactory lint r.yaml --format markdown > lint.md;"
        " cp imagefactory/x y | /usr/local/bin/imagefactory store list"
    )
    assert found == [["lint", "r.yaml", "--format", "markdown"], ["store", "list"]]


@pytest.mark.parametrize(
    "text",
    [
        "```sh\nimagefactory build x\n```\n",
        "```\nimagefactory build x\n```\n",
        "```console\nno prompt here\n```\n",
        "<!-- guide: exit 1 -->\n```yaml\na: 1\n```\n",
        "<!-- guide: sometimes -->\n```console\n$ true\n```\n",
        "<!-- guide: stop after output -->\n```console\n$ imagefactory run x\n```\n",
        "```console\n$ cat > x <<'EOF'\nnever ends\n```\n",
        "```console\n$ true\n",
    ],
)
def test_guides_that_break_the_convention_are_refused(text: str) -> None:
    with pytest.raises(GuideError):
        parse("g.md", text)


def test_expected_output_is_matched_in_order_with_wildcards() -> None:
    output = "==> build\nimages/a/1.0: published (from cache)\nALLOW: images/a/1.0\n"
    assert missing_output(("published", "ALLOW: ..."), output) is None
    assert missing_output(("ALLOW", "published"), output) == "published"
    assert missing_output(("images/.../1.0: published (from cache)",), output) is None
    assert missing_output(("DENY",), output) == "DENY"
