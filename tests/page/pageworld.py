"""A catalog for the page tests, made with the real catalog code.

Four image versions in three VOs, signed with test keys and published:
``atlas-wn`` 1.0 (revoked, with a reason) and 1.1 (debian 12, x86_64), ``cms-wn``
2.0 (ubuntu 24.04, aarch64, persistent) and ``lhcb-wn`` 3.0 whose labels carry
markup and script in the places a VO recipe or an image can put them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagefactory.catalog.ops import revoke
from imagefactory.catalog.repo import Catalog
from tests.catalog.world import World, fresh
from tests.fakes.imagedirs import key_sign, make_image

SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '"><img src=x onerror="window.__pwned = 2">'
STYLE_BREAK = "</style><script>window.__pwned = 3</script>"
REASON = "CVE-2026-0001 in the kernel <script>window.__pwned = 4</script>"
HOSTILE_KEY = "<b onmouseover=alert(5)>key</b>"


def signed_image(world: World, name: str, version: str, vo: str, **labels: Any) -> Path:
    """A signed image directory; ``labels`` (``"os.distro": ...``) changes labels first."""
    key = world.vo_key(vo)
    base_edit = fresh(name, version, vo)

    def edit(doc: dict[str, Any]) -> None:
        base_edit(doc)
        for dotted, value in labels.items():
            *path, last = dotted.split(".")
            where = doc
            for part in path:
                where = where.setdefault(part, {})
            where[last] = value

    path = make_image(world.root / "src" / vo / name, version, edit=edit)
    key_sign(path, key)
    return path


def page_world(tmp_path: Path) -> World:
    catalog = Catalog(tmp_path / "catalog")
    catalog.init()
    world = World(tmp_path, catalog)
    world.publish(signed_image(world, "atlas-wn", "1.0", "atlas"))
    world.publish(signed_image(world, "atlas-wn", "1.1", "atlas"))
    world.publish(
        signed_image(
            world,
            "cms-wn",
            "2.0",
            "cms",
            **{
                "os.distro": "ubuntu",
                "os.version": "24.04",
                "os.codename": "noble",
                "os.arch": "aarch64",
                "trust.model": "persistent",
            },
        )
    )
    world.publish(
        signed_image(
            world,
            "lhcb-wn",
            "3.0",
            "lhcb",
            **{
                "os.distro": SCRIPT,
                "trust.model": IMG,
                "endorser.contact": STYLE_BREAK,
                f"extra.{HOSTILE_KEY}": "&amp; <i>not italic</i>",
            },
        )
    )
    revoke(catalog, "atlas-wn", "1.0", REASON)
    return world
