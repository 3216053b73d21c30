"""Fixtures of the catalog tests."""

from tests.catalog.registry import registry  # noqa: F401 -- a real docker-registry on 127.0.0.1
