"""The one function that runs external commands (real, tiny commands)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from imagefactory.errors import CommandError, MissingToolError
from imagefactory.run import clean_env, output_of, run


def test_output_is_streamed_to_the_log_and_callback_and_command_logged() -> None:
    log = io.StringIO()
    lines: list[str] = []
    done = run(
        ["sh", "-c", "echo one; echo two >&2; printf three"], logfile=log, on_line=lines.append
    )
    assert done.returncode == 0
    assert lines == ["one", "two", "three"]
    assert log.getvalue().startswith("+ sh -c 'echo one; echo two >&2; printf three'\n")
    assert log.getvalue().endswith("one\ntwo\nthree")


def test_environment_is_clean_plus_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "x")
    env = dict(line.split("=", 1) for line in output_of(["env"], env={"EXTRA": "1"}).splitlines())
    assert "SECRET_TOKEN" not in env
    assert env["EXTRA"] == "1"
    assert env["LC_ALL"] == "C.UTF-8"
    assert set(env) <= {*clean_env(), "EXTRA", "PWD", "SHLVL", "_"}


def test_failure_names_status_and_a_pasteable_command_with_output_tail() -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo some detail; exit 3"])
    error = info.value
    assert error.returncode == 3
    assert error.message == "command failed with exit status 3: sh -c 'echo some detail; exit 3'"
    assert "some detail" in error.render()


def test_missing_tool_names_its_debian_package() -> None:
    with pytest.raises(MissingToolError) as info:
        run(["debootstrap-not-here"])
    assert "missing host tools: debootstrap-not-here" in info.value.render()
    with pytest.raises(MissingToolError) as info:
        run(["sfdisk", "--version"], env={"PATH": "/nonexistent"})
    assert "apt-get install fdisk" in (info.value.hint or "")


def test_signal_and_timeout_are_explained() -> None:
    with pytest.raises(CommandError, match="command killed by SIGKILL"):
        run(["sh", "-c", "kill -KILL $$"])
    with pytest.raises(CommandError, match=r"timed out after 1s and was stopped"):
        run(["sleep", "30"], timeout=1)
    assert run(["sleep", "30"], timeout=0.5, check=False).timed_out


def test_until_stops_the_command_when_the_marker_appears_even_without_newline() -> None:
    done = run(["sh", "-c", "printf 'boot...\\nlogin: '; sleep 30"], until=lambda t: "login:" in t)
    assert done.stopped
    assert not done.timed_out


def test_capture_returns_stdout_and_keeps_stderr_for_the_error(tmp_path: Path) -> None:
    assert output_of(["sh", "-c", "echo out; echo err >&2"]) == "out"
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo out; echo why >&2; exit 1"], capture=True, cwd=tmp_path)
    assert info.value.output.strip() == "why"


def test_no_descriptor_is_leaked() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        run(["true"], capture=True)
        run(["true"])
    assert len(os.listdir("/proc/self/fd")) == before
