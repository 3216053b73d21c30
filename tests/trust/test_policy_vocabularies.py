"""``policy check`` checks values against the vocabularies, as recipes are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.errors import DiagnosticsError
from imagefactory.trust import EXAMPLE_POLICY, load_policy


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as info:
        load_policy(path)
    return [d.render().split(": ", 1)[1] for d in info.value.diagnostics]


def test_the_example_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE_POLICY)
    assert "atlas" in load_policy(path).vos


def test_releases_arches_and_vo_names_against_the_vocabularies(tmp_path: Path) -> None:
    assert '    releases: ["12", "13", "22.04", "24.04"]' in EXAMPLE_POLICY
    text = (
        EXAMPLE_POLICY.replace(
            'releases: ["12", "13", "22.04", "24.04"]', 'releases: [12.0, "14", bookwrom]'
        )
        .replace("arches: [x86_64]", "arches: [amd64, arm64]")
        .replace("\n  atlas:", "\n  CMS:")
    )
    problems = _problems(tmp_path, text)
    assert any(
        p.startswith(".vos.CMS: expected a VO name") and p.endswith("(did you mean 'cms'?)")
        for p in problems
    ), problems
    releases = [p for p in problems if ".releases[" in p]
    assert len(releases) == 3, problems
    assert releases[0].endswith("found '12.0' (did you mean '12'?)")
    assert releases[1].endswith("found '14'")
    assert releases[2].endswith("found 'bookwrom' (did you mean 'bookworm'?)")
    arches = [p for p in problems if ".arches[" in p]
    assert arches[0].endswith("found 'amd64' (did you mean 'x86_64'?)")
    assert arches[1].endswith("found 'arm64' (did you mean 'aarch64'?)")


def test_a_release_must_belong_to_an_allowed_distro(tmp_path: Path) -> None:
    assert "distros: [debian, ubuntu]" in EXAMPLE_POLICY
    text = EXAMPLE_POLICY.replace("distros: [debian, ubuntu]", "distros: [debian]")
    problems = _problems(tmp_path, text)
    assert len(problems) == 2, problems
    assert problems[0].startswith(".vos.atlas.releases[2]:")
    assert "found '22.04'" in problems[0]
    assert "found '24.04'" in problems[1]
    assert "ubuntu" not in problems[0].split("found")[0]
