"""Host settings: file, environment, defaults, and errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagefactory.errors import SettingsError
from imagefactory.settings import load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_file_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEFACTORY_DEBIAN_MIRROR", raising=False)
    path = _write(
        tmp_path,
        "mirrors: {debian: 'http://m.test/debian/'}\n"
        "build: {cache_dir: /var/cache/if, allow_scripts: true, accel: tcg,"
        " allowed_elements: [growroot]}\n",
    )
    settings = load_settings(path)
    assert settings.source == path
    assert settings.mirrors == {"debian": "http://m.test/debian"}
    assert settings.cache_dir == Path("/var/cache/if")
    assert settings.dib_image_cache == Path("/var/cache/if/dib")
    assert settings.allow_scripts is True
    assert settings.accel == "tcg"
    assert settings.allowed_elements == frozenset({"growroot"})
    assert settings.build_limits().allow_scripts is True


def test_environment_mirror_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFACTORY_DEBIAN_MIRROR", "https://env.test/debian")
    path = _write(tmp_path, "mirrors: {debian: 'http://file.test/debian'}\n")
    assert load_settings(path).mirrors["debian"] == "https://env.test/debian"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mirors: {}\n", ":1:1: .mirors: unknown key 'mirors' (did you mean 'mirrors'?)"),
        ("mirrors: {debian: ftp://x}\n", ":1:19: .mirrors.debian: expected an http(s) URL"),
        ("mirrors:\n  fedora: http://x\n", ":2:3: .mirrors.fedora: unknown key 'fedora'"),
        ("build: {accel: fast}\n", ":1:16: .build.accel: expected one of auto, kvm, tcg"),
        ("build: {allow_scripts: 'yes'}\n", ".build.allow_scripts: expected true or false"),
        ("build: {alow_scripts: true}\n", "did you mean 'allow_scripts'?"),
        ("- a list\n", ":1:1: .: expected a mapping, found a list"),
        ("build: [\n", ":2:1: .: YAML syntax error"),
    ],
)
def test_errors_name_the_file_line_column_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert f"{path}:" in info.value.render()
    assert message in info.value.render()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "build: {accel: fast, allow_scripts: 1}\nmirors: {}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert len(info.value.diagnostics) == 3


def test_an_empty_settings_file_means_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "# nothing set yet\n"))
    assert settings.accel == "auto"
    assert settings.output_dir == tmp_path / "images"


def test_relative_paths_are_made_absolute_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settings file's relative paths are relative to the file; the defaults to the cwd."""
    conf = tmp_path / "etc"
    conf.mkdir()
    path = _write(
        conf, "build: {output_dir: out, cache_dir: ../cache}\nkeyrings: {ubuntu: k.gpg}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(Path(os.path.relpath(path, elsewhere)))
    assert settings.source is not None
    assert settings.source.is_absolute()
    assert settings.source.resolve() == path
    assert settings.output_dir.is_absolute()
    assert settings.output_dir.resolve() == conf / "out"
    assert settings.cache_dir.resolve() == tmp_path / "cache"
    assert settings.keyrings["ubuntu"].resolve() == conf / "k.gpg"
    monkeypatch.delenv("IMAGEFACTORY_SETTINGS", raising=False)
    monkeypatch.setattr("imagefactory.settings.SYSTEM_SETTINGS", tmp_path / "absent.yaml")
    assert load_settings(None).output_dir == elsewhere / "images"


def test_known_broken_archives_are_suite_and_arch(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "known_broken_archives: [bookworm-security/i386]\n"))
    assert settings.known_broken_archives == frozenset({"bookworm-security/i386"})
    assert load_settings(_write(tmp_path, "{}\n")).known_broken_archives == frozenset()
    with pytest.raises(SettingsError) as info:
        load_settings(_write(tmp_path, "known_broken_archives: [bookworm-security]\n"))
    assert ":1:25: .known_broken_archives[0]: expected a suite and architecture" in (
        info.value.render()
    )


def test_allowed_repositories_and_the_key_directory(tmp_path: Path) -> None:
    fpr = "0123456789abcdef0123456789abcdef01234567"
    settings = load_settings(
        _write(
            tmp_path,
            "build:\n  repository_keys: keys\n  allowed_repositories:\n"
            f"    - {{url_prefix: https://repo.example.org/cvmfs/, fingerprints: [{fpr}]}}\n",
        )
    )
    [allowed] = settings.allowed_repositories
    assert allowed.fingerprints == frozenset({fpr.upper()})
    assert allowed.covers("https://repo.example.org/cvmfs/debian")
    assert not allowed.covers("https://repo.example.org/cvmfs-evil")
    assert settings.build_limits().allowed_repositories == (allowed,)
    assert settings.repository_keys == tmp_path / "keys"
    # None by default: fail closed.
    assert load_settings(_write(tmp_path, "{}\n")).allowed_repositories == ()
    with pytest.raises(SettingsError) as info:
        load_settings(
            _write(
                tmp_path,
                "build:\n  allowed_repositories:\n"
                "    - {url_prefix: 'file:///srv', fingerprints: [ABCD]}\n    - {url_prfix: x}\n",
            )
        )
    rendered = info.value.render()
    assert ":3:20: .build.allowed_repositories[0].url_prefix: expected an http or https URL" in (
        rendered
    )
    assert ".build.allowed_repositories[0].fingerprints[0]: expected a 40-hex-digit" in rendered
    assert "unknown key 'url_prfix' (did you mean 'url_prefix'?)" in rendered
