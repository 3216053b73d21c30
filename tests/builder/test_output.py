from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imagefactory.builder.output import final_dir, publish, remove_stale_staging, staging_dir
from imagefactory.errors import BuildError


def _record(directory: Path, key: str) -> None:
    (directory / "build.json").write_text(json.dumps({"cache": {"key": key}}))


def test_staging_is_removed_when_the_build_fails(tmp_path: Path) -> None:
    def failing_build() -> None:
        with staging_dir(tmp_path, "wn", "1") as staging:
            (staging / "half.qcow2").write_bytes(b"x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_build()
    assert os.listdir(tmp_path) == []


def test_publish_is_a_rename_and_versions_are_immutable(tmp_path: Path) -> None:
    final = final_dir(tmp_path, "wn", "1")
    with staging_dir(tmp_path, "wn", "1") as staging:
        _record(staging, "k1")
        assert publish(staging, final)
    assert json.loads((final / "build.json").read_text())["cache"]["key"] == "k1"
    with staging_dir(tmp_path, "wn", "1") as staging:
        _record(staging, "k1")
        assert not publish(staging, final)  # same inputs: nothing to do
    with staging_dir(tmp_path, "wn", "1") as staging:
        _record(staging, "k2")
        with pytest.raises(BuildError, match="already holds a different build") as info:
            publish(staging, final)
        assert "bump `version`" in (info.value.hint or "")
        assert publish(staging, final, replace=True)
    assert json.loads((final / "build.json").read_text())["cache"]["key"] == "k2"
    # Published files are read-only: booting the disk read-write fails instead.
    assert (final / "build.json").stat().st_mode & 0o777 == 0o444
    assert sorted(os.listdir(tmp_path)) == ["wn"]
    assert os.listdir(tmp_path / "wn") == ["1"]


def test_publish_refuses_a_staging_dir_without_record(tmp_path: Path) -> None:
    with (
        staging_dir(tmp_path, "wn", "1") as staging,
        pytest.raises(BuildError, match="incomplete build"),
    ):
        publish(staging, final_dir(tmp_path, "wn", "1"))


def test_stale_staging_of_dead_process_is_removed_live_one_kept(tmp_path: Path) -> None:
    dead = tmp_path / ".staging-wn-1-999999999-abc123"
    live = tmp_path / f".staging-wn-1-{os.getpid()}-abc123"
    unrelated = tmp_path / "wn"
    for d in (dead, live, unrelated):
        d.mkdir()
    remove_stale_staging(tmp_path)
    assert not dead.exists()
    assert live.exists()
    assert unrelated.exists()


def test_publish_refuses_a_staging_dir_without_the_disks_its_record_names(tmp_path: Path) -> None:
    """A copy-free cached rebuild whose output vanished meanwhile: never an output without disks."""
    final = final_dir(tmp_path, "wn", "1")
    with staging_dir(tmp_path, "wn", "1") as staging:
        record = {"cache": {"key": "k1"}, "disk": {"files": {"wn-1.qcow2": {}}}}
        (staging / "build.json").write_text(json.dumps(record))
        with pytest.raises(BuildError, match=r"lacks wn-1\.qcow2"):
            publish(staging, final)
    assert not final.exists()
