"""Fixtures of the catalog tests."""

from pathlib import Path

import pytest

from imagefactory.oci.credentials import PASSWORD_VAR, USER_VAR
from tests.catalog.registry import (  # noqa: F401 -- real docker-registries on 127.0.0.1
    auth_registry,
    registry,
    token_registry,
)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A home without docker or containers auth files, no credential variables."""
    home = tmp_path / "home"
    home.mkdir()
    for var in (USER_VAR, PASSWORD_VAR, "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "ORAS_USER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home
