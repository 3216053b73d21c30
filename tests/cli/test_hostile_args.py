"""Every command, every subcommand, with hostile arguments: never a traceback.

The commands are found by walking the real parser, so a command added to
``imagefactory/cli/`` is covered without editing this file. Each gets, in
turn for its positional arguments and then for each of its value options:
an empty string, a path under a directory that does not exist, a directory
where a file is expected, a file of NUL-free garbage, and a regular
expression that does not compile. Whatever the input, the command must answer
with one of the documented exit codes and an ``error:`` line, never a Python
traceback or the last-resort "internal error" of ``main()``; with ``--json``
stdout must hold one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory import cli
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT

GARBAGE = "not an image (\n{[ ]}: ::\n\x01\x02\x7f garbage " * 40


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command: its argv prefix and its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*prefix, name))


def _is_value_option(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.nargs != 0 and not action.choices


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(_leaves(cli.build_parser()))


def _hostile_values(tmp: Path) -> list[str]:
    folder = tmp / "a-directory"
    folder.mkdir(exist_ok=True)
    garbage = tmp / "garbage.bin"
    garbage.write_text(GARBAGE)
    return ["", str(tmp / "no" / "such" / "dir" / "f"), str(folder), str(garbage), "("]


def _argvs(
    prefix: tuple[str, ...], parser: argparse.ArgumentParser, values: list[str], garbage: str
) -> Iterator[list[str]]:
    positionals = [a for a in parser._actions if not a.option_strings]
    options = [a for a in parser._actions if _is_value_option(a)]
    for value in values:
        argv = list(prefix)
        for action in positionals:
            if action.nargs == argparse.REMAINDER:
                argv += ["--", value]
            else:
                argv.append(value)
        yield argv
    for option in options:
        for value in values:
            argv = [*prefix, f"{option.option_strings[-1]}={value}"]
            for action in positionals:
                argv += ["--", garbage] if action.nargs == argparse.REMAINDER else [garbage]
            yield argv


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(prefix) for prefix, _ in _commands()}
    assert {"build", "key generate", "boot-test", "labels show", "policy check"} <= names
    assert "gate-libvirt-hook" in names
    assert "catalog render" in names
    assert {"instantiate", "discard", "instances list", "instances gc"} <= names


@pytest.mark.parametrize(
    "prefix", [p for p, _ in _commands()], ids=[" ".join(p) for p, _ in _commands()]
)
def test_hostile_arguments_never_make_a_traceback(
    prefix: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    def no_exec(argv: object, **kwargs: object) -> None:
        raise AssertionError(f"the gate would have run {argv!r}")

    # The gate and `run` replace themselves with an allowed command; here
    # nothing may run, wherever replace_process was imported.
    for module in ("imagefactory.run", "imagefactory.gate.command", "imagefactory.gate.start"):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(loaded, "replace_process"):
            monkeypatch.setattr(loaded, "replace_process", no_exec)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(GARBAGE.encode())))
    monkeypatch.chdir(tmp_path)
    # No ambient settings or CI credentials leak in from the developer's host.
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"build:\n  cache_dir: {tmp_path / 'cache'}\n  output_dir: {tmp_path}\n")
    monkeypatch.setenv("IMAGEFACTORY_SETTINGS", str(settings))
    for var in ("ACTIONS_ID_TOKEN_REQUEST_URL", "SIGSTORE_ID_TOKEN", "GITLAB_CI"):
        monkeypatch.delenv(var, raising=False)
    parser = dict(_commands())[prefix]
    values = _hostile_values(tmp_path)
    garbage = values[3]
    for argv in _argvs(prefix, parser, values, garbage):
        for extra in ([], ["--json"]):
            # --json right after the command: after a gate's "--" it would be
            # the guarded command's argument.
            full = [*prefix, *extra, *argv[len(prefix) :]]
            code = cli.main(full)
            out, err = capsys.readouterr()
            where = f"imagefactory {' '.join(full)!r}"
            assert code in (EXIT_OK, EXIT_VERDICT, EXIT_ERROR), where
            assert "Traceback" not in err + out, where
            assert "internal error" not in err, f"{where}: {err}"
            if code != EXIT_OK:
                assert (err + out).strip(), f"{where}: failed without saying why"
            if extra:
                doc = json.loads(out)
                if code != EXIT_OK:
                    assert doc["ok"] is False or doc.get("allowed") is False, where


HOSTILE_REQUIREMENTS = [
    "distro=debian\0",
    "\0",
    "distro=debian," * 100_000,
    "vo=\u0430tlas",  # Cyrillic a
    "distro=deb\u0456an",  # Cyrillic i
    "arch=x86\uff3f64",  # fullwidth low line
    "name=..",
    "version=../../../etc/passwd",
    "vo=..,name=/",
    'distro=debian" || true || "',
    "release>=12\n,arch=x86_64",
    "=" * 5000,
    "release>=1" + "0" * 10_000,
    "vo=" + "|".join(["atlas"] * 1000),
]


@pytest.mark.parametrize("requirement", HOSTILE_REQUIREMENTS, ids=range(len(HOSTILE_REQUIREMENTS)))
def test_select_refuses_hostile_requirements_cleanly(
    requirement: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text("vos: {}\n")
    (tmp_path / "store").mkdir()
    for extra in ([], ["--json"]):
        argv = ["select", *extra, "--store", str(tmp_path / "store"), "--policy", str(policy)]
        code = cli.main([*argv, "--require", requirement])
        out, err = capsys.readouterr()
        assert code == EXIT_ERROR, err
        assert "Traceback" not in out + err
        assert "internal error" not in err
        assert "error: --require" in err
        assert len(err) < 2000, "a huge requirement is not echoed back whole"
        if extra:
            doc = json.loads(out)
            assert doc["ok"] is False
            assert doc["error"]["problems"]
