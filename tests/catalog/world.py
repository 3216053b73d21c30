"""A small catalog world for catalog and store tests: keys, signed images, a site.

Images are the sign/verify tests' fake image directories (tests/sign/imagedirs.py)
with their name, version and VO set, and labels that are fresh at the real
time (TUF judges expiry at the real time too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagefactory.attest.keys import load_signer
from imagefactory.catalog.publish import Published, publish
from imagefactory.catalog.repo import Catalog
from imagefactory.store.pull import PullOptions, PullResult, pull
from imagefactory.trust import load_policy
from tests.fakes.imagedirs import key_sign, key_signer, make_image, new_key, vo_rules, write_policy


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def fresh(name: str, version: str, vo: str, days: int = 29) -> Any:
    """A labels edit: this name, version and VO, created an hour ago, expiring in ``days``."""
    now = datetime.now(UTC)

    def edit(labels: dict[str, Any]) -> None:
        labels["image"].update(
            name=name,
            version=version,
            created=_time(now - timedelta(hours=1)),
            expires=_time(now + timedelta(days=days)),
        )
        labels["vo"] = [vo]
        labels["recipe"].update(name=name, version=version)
        # What the shared fake lacks for the label schema (OCI annotations validate it).
        labels["audit"].setdefault("profile_digest", "sha256:" + "0" * 64)
        labels["audit"].setdefault("warnings", [])
        labels["builder"].setdefault("libguestfs", "1.48.6")

    return edit


@dataclass
class World:
    """A catalog with its keys, VO keys, a source tree of images and a site."""

    root: Path
    catalog: Catalog
    vo_keys: dict[str, Path] = field(default_factory=dict)

    @property
    def root_json(self) -> bytes:
        return (self.catalog.metadata_dir / "root.json").read_bytes()

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def policy_path(self) -> Path:
        return self.root / "site.yaml"

    def vo_key(self, vo: str) -> Path:
        if vo not in self.vo_keys:
            (self.root / "keys").mkdir(exist_ok=True)
            self.vo_keys[vo] = new_key(self.root / "keys", vo)
            write_policy(
                self.policy_path,
                {v: vo_rules(key_signer(f"{v}-vo", k)) for v, k in self.vo_keys.items()},
            )
        return self.vo_keys[vo]

    def image(
        self,
        name: str = "atlas-wn",
        version: str = "1.0",
        vo: str = "atlas",
        *,
        disk: bytes | None = None,
        days: int = 29,
        signer_vo: str | None = None,
    ) -> Path:
        """A signed image directory (signed by ``signer_vo``'s key, default its own VO's)."""
        key = self.vo_key(signer_vo or vo)
        self.vo_key(vo)
        base = self.root / "src" / vo / name
        while (base / version).exists():
            base = base.with_name(base.name + "+")
        path = make_image(base, version, edit=fresh(name, version, vo, days), disk=disk)
        key_sign(path, key)
        return path

    def publish(self, image: Path, vo_signer: str | None = None, **kw: Any) -> Published:
        signers = [load_signer(str(self.vo_keys[vo_signer]))] if vo_signer else None
        return publish(self.catalog, image, signers=signers, **kw)

    def pull(self, where: str | None = None, **kw: Any) -> PullResult:
        options = PullOptions(**kw)
        return pull(
            where or str(self.catalog.directory),
            self.root_json,
            load_policy(self.policy_path),
            self.store,
            options,
        )

    def installed(self) -> list[str]:
        from imagefactory.store.layout import Store

        return sorted(Store(self.store).installed())


def make_world(tmp_path: Path) -> World:
    catalog = Catalog(tmp_path / "catalog")
    catalog.init()
    world = World(tmp_path, catalog)
    world.vo_key("atlas")
    return world
