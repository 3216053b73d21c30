"""Fixtures of the catalog tests."""

from tests.catalog.registry import (  # noqa: F401 -- real docker-registries on 127.0.0.1
    auth_registry,
    registry,
)
