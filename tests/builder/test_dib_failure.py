"""A failed diskimage-builder run says what apt said, with the command faked at run()."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from imagefactory.builder import dibrun, pipeline
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.element import write_element
from imagefactory.errors import BuildError, CommandError
from imagefactory.mirrors import BaseArchive
from imagefactory.progress import Progress
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.settings import Settings
from imagefactory.vocab import Distro

REPO = Path(__file__).resolve().parents[2]
DIB_OUTPUT = [
    "2026-12-01 20:10:00.001 | dib-run-parts Running /tmp/x/install.d/01-package-installs",
    "2026-12-01 20:10:01.002 | Reading package lists...",
    "2026-12-01 20:10:01.003 | Setting up chrony (4.3-2) ...",
    "2026-12-01 20:10:02.004 | E: Unable to locate package cvmfs",
    "2026-12-01 20:10:02.005 | E: Unable to locate package apptainer",
]


def test_apt_lines_are_quoted_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: Any) -> None:
        for line in DIB_OUTPUT:
            kwargs["on_line"](line + "\n")
        raise CommandError("disk-image-create exited with 1", argv=argv, returncode=1)

    monkeypatch.setattr(dibrun, "run", fake_run)
    recipe = load_recipe(REPO / "recipes" / "site-base-debian12.yaml", DEFAULT_LIMITS)
    status = io.StringIO()
    with (tmp_path / "build.log").open("w") as log:
        ctx = BuildContext(
            recipe=recipe,
            settings=Settings(cache_dir=tmp_path / "cache"),
            options=BuildOptions(),
            progress=Progress(stream=status),
            staging=tmp_path,
            logfile=log,
        )
        ctx.archive = BaseArchive(Distro.DEBIAN, "bookworm", "http://127.0.0.1:9/d", None, "test")
        ctx.element = write_element(recipe, tmp_path / "elements")
        with pytest.raises(BuildError) as info:
            pipeline.run_dib(ctx)
    assert info.value.message.splitlines() == [
        "diskimage-builder failed in install.d/01-package-installs",
        "  apt: E: Unable to locate package cvmfs",
        "  apt: E: Unable to locate package apptainer",
    ]
    assert "build.log" in (info.value.hint or "")
