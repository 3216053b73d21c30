"""``store list`` and ``store export --to image-list``: what a site's store holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from imagefactory.errors import LabelError
from imagefactory.labels.exports import image_list_entry
from imagefactory.model.imagedir import LayoutError, load_image_dir
from imagefactory.model.labels import Labels
from imagefactory.store.layout import Store


def store_list(store: Store) -> list[dict[str, Any]]:
    """One entry per image directory in the store, with its labels' key facts."""
    state = store.load_state() if store.state_dir.exists() else None
    out: list[dict[str, Any]] = []
    for key, path in sorted(store.installed().items()):
        try:
            image = load_image_dir(path)
        except LayoutError as exc:
            out.append({"image": key, "path": str(path), "problem": exc.message})
            continue
        labels = image.labels
        out.append(
            {
                "image": key,
                "path": str(path),
                "disk": str(image.disk),
                "format": image.declared_format,
                "os": f"{labels['os']['distro']} {labels['os']['version']} {labels['os']['arch']}",
                "expires": labels["image"].get("expires"),
                "installed": (state.images.get(key, {}).get("installed") if state else None),
                "minimum_version": (state.minimum.get(key.rsplit("/", 1)[0]) if state else None),
            }
        )
    return out


def image_list(store: Store, title: str = "imagefactory store") -> dict[str, Any]:
    """A HEPiX image list (``hv:imagelist``) of the store, for vmcatcher-era tooling.

    Unsigned: the store's images were verified on the way in; a site that
    republishes the list signs it with its own tooling.
    """
    images = []
    for key, path in sorted(store.installed().items()):
        try:
            image = load_image_dir(path)
            labels = Labels.from_dict(image.labels)
        except (LayoutError, LabelError):
            continue  # verified on the way in; unreadable now means someone changed it
        images.append(image_list_entry(labels, uri=image.disk.as_uri()))
        del key
    return {
        "hv:imagelist": {
            "dc:title": title,
            "dc:date:created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hv:images": images,
        }
    }
