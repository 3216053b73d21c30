"""Fixtures shared by the gate tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.gate.check import GateConfig
from imagefactory.trust import load_policy
from imagefactory.verify.cache import VerifiedCache
from tests.fakes.imagedirs import key_sign, key_signer, make_image, new_key, vo_rules, write_policy


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An image store with a signed image ``good`` and an unsigned ``bad``; key and policy."""
    key = new_key(tmp_path, "atlas")
    store = tmp_path / "store"
    key_sign(make_image(store, "good"), key)
    make_image(store, "bad")
    write_policy(tmp_path / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    return store


def config(store: Path) -> GateConfig:
    policy = load_policy(store.parent / "site.yaml")
    return GateConfig(policy, store, VerifiedCache(store.parent / "cache"))
