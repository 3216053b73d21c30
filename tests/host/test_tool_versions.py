"""The tool versions in the cache key: dpkg asked once per state of its database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from imagefactory.host import tools
from imagefactory.run import Completed


@pytest.fixture
def dpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A fake dpkg database and dpkg-query (the seam: run); returns the queries made."""
    status = tmp_path / "status"
    status.write_text("Package: qemu-utils\n")
    monkeypatch.setattr(tools, "DPKG_STATUS", status)
    queries: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> Completed:
        queries.append(argv)
        version = "1:7.2+dfsg-7" if "new" not in status.read_text() else "1:8.0"
        return Completed(argv=argv, returncode=0, stdout=f"qemu-utils {version}\n")

    monkeypatch.setattr(tools, "run", fake_run)
    return queries


def test_versions_are_read_from_dpkg_once_per_database_state(
    tmp_path: Path, dpkg: list[list[str]]
) -> None:
    cache = tmp_path / "cache" / "tool-versions.json"
    first = tools.tool_versions(cache)
    assert first["qemu-utils"] == "1:7.2+dfsg-7"
    assert first["mtools"] == "absent"
    assert len(dpkg) == 1
    assert tools.tool_versions(cache) == first
    assert len(dpkg) == 1  # the database is unchanged: not asked again
    # dpkg replaces its database on every change (a new file renamed over it).
    new = tmp_path / "status-new"
    new.write_text("Package: qemu-utils\nnew\n")
    new.replace(tools.DPKG_STATUS)
    assert tools.tool_versions(cache)["qemu-utils"] == "1:8.0"
    assert len(dpkg) == 2


def test_a_touched_database_or_a_damaged_cache_asks_dpkg_again(
    tmp_path: Path, dpkg: list[list[str]]
) -> None:
    cache = tmp_path / "tool-versions.json"
    tools.tool_versions(cache)
    os.utime(tools.DPKG_STATUS)  # even a touch changes its identity (ctime)
    tools.tool_versions(cache)
    cache.write_text("{not json")
    tools.tool_versions(cache)
    tools.tool_versions(None)  # no cache: always asked
    assert len(dpkg) == 4
