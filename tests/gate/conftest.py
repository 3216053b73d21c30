"""Fixtures shared by the gate tests.

``store``: a store path with a signed image ``good`` and an unsigned ``bad``;
``images``: the same as a :class:`Store` with its gate configuration (mode 0755
directories, the verify time pinned).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefactory.gate.check import GateConfig
from imagefactory.trust import load_policy
from imagefactory.verify import VerifyOptions
from imagefactory.verify.cache import VerifiedCache
from tests.fakes.imagedirs import (
    NOW,
    key_sign,
    key_signer,
    make_image,
    new_key,
    vo_rules,
    write_policy,
)

RAW = "atlas-wn-debian12-1.0.raw"


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
    return GateConfig(
        policy, store, VerifiedCache(store.parent / "cache"), run_dir=store.parent / "run"
    )


@dataclass(frozen=True)
class Store:
    root: Path
    config: GateConfig

    @property
    def good(self) -> Path:
        return self.root / "good" / RAW

    @property
    def bad(self) -> Path:
        return self.root / "bad" / RAW


@pytest.fixture
def images(tmp_path: Path) -> Store:
    """A store (mode 0755, root's) with a signed image ``good`` and an unsigned ``bad``."""
    key = new_key(tmp_path, "atlas")
    root = tmp_path / "store"
    key_sign(make_image(root, "good"), key)
    make_image(root, "bad")
    for path in (root, root / "good", root / "bad"):
        path.chmod(0o755)
    policy = load_policy(
        write_policy(tmp_path / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    )
    config = GateConfig(
        policy,
        root,
        VerifiedCache(tmp_path / "cache"),
        VerifyOptions(now=NOW),
        run_dir=tmp_path / "run",
    )
    return Store(root, config)
