"""A build the archive refuses fails the slow tests in CI, unless it is known broken."""

from __future__ import annotations

import dataclasses

import pytest

from imagefactory.errors import ArchiveError, InconsistentArchiveError
from imagefactory.settings import Settings
from tests.integration_images import archive_refused

BROKEN = InconsistentArchiveError(
    "the package archive serves indexes that do not match its signed InRelease:\n"
    "  http://m.test/debian-security/dists/bookworm-security/main/binary-i386/Packages.xz:"
    " 7 bytes served, 9 listed in InRelease",
    suites=("bookworm-security/i386",),
)


def test_in_ci_an_inconsistent_archive_fails_with_the_archives_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        archive_refused(BROKEN, Settings())
    assert "binary-i386/Packages.xz: 7 bytes served, 9 listed in InRelease" in str(info.value)


def test_a_known_broken_archive_is_skipped_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    settings = dataclasses.replace(
        Settings(), known_broken_archives=frozenset({"bookworm-security/i386"})
    )
    with pytest.raises(pytest.skip.Exception, match="known_broken_archives"):
        archive_refused(BROKEN, settings)


def test_only_the_listed_indexes_count_as_known_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    settings = dataclasses.replace(
        Settings(), known_broken_archives=frozenset({"bookworm-updates/i386"})
    )
    with pytest.raises(pytest.fail.Exception):
        archive_refused(BROKEN, settings)
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        archive_refused(ArchiveError("mirror unreachable"), settings)


def test_locally_it_is_skipped_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="7 bytes served"):
        archive_refused(BROKEN, Settings())
