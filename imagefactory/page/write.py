"""Write the catalog page: verify the catalog, render, replace ``index.html`` in one rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imagefactory.catalog.repo import Catalog
from imagefactory.errors import CatalogError, CatalogRefusedError, FileAccessError
from imagefactory.fsutil import atomic_write, is_disk_full
from imagefactory.page.html import render
from imagefactory.page.view import CatalogView, load_view, require_catalog

PAGE_NAME = "index.html"


@dataclass(frozen=True)
class Page:
    """A written page: where, and what it shows."""

    path: Path
    view: CatalogView

    def to_dict(self) -> dict[str, object]:
        return {
            "page": str(self.path),
            "catalog_version": self.view.catalog_version,
            "root_sha256": self.view.root_sha256,
            "images": [
                {
                    "vo": i.vo,
                    "name": i.name,
                    "version": i.version,
                    "status": i.status,
                    "reason": i.revoked_reason,
                    "problems": list(i.problems),
                }
                for i in self.view.images
            ],
            "refused": [{"path": p, "code": c, "message": m} for p, c, m in self.view.refused],
        }


def _read_root(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            return stream.read(1024 * 1024)
    except OSError as exc:
        raise FileAccessError.from_os_error(path, "read the root metadata", exc) from exc


def write_page(
    catalog_dir: Path,
    out: Path | None = None,
    root: Path | None = None,
    now: datetime | None = None,
) -> Page:
    """Verify ``catalog_dir`` against ``root`` (default: its own ``metadata/root.json``)
    and write the page to ``out`` (default: ``index.html`` in the catalog).

    Written into the catalog, the page is made under the catalog's lock, so
    two changes that each re-render leave the page of the later state.
    """
    catalog_dir = Path(catalog_dir)
    require_catalog(catalog_dir)
    out = Path(out) if out is not None else catalog_dir / PAGE_NAME
    if out.is_dir():
        raise FileAccessError(
            f"{out}: is a directory; the page is a file", hint="name a file, e.g. DIR/index.html"
        )
    root_bytes = _read_root(root if root is not None else catalog_dir / "metadata" / "root.json")
    catalog = Catalog(catalog_dir)
    inside = _inside(out, catalog_dir)
    with _lock(catalog, inside):
        try:
            view = load_view(catalog_dir, root_bytes, now)
        except CatalogRefusedError as exc:
            if exc.code != "catalog-expired":
                raise
            raise CatalogRefusedError(
                f"{catalog_dir}: {exc.message}; no site accepts this catalog now, so no page"
                " is made",
                code=exc.code,
                hint=f"re-sign it: imagefactory catalog refresh --catalog {catalog_dir}",
            ) from exc
        prefix = os.path.relpath(catalog_dir.resolve(), out.parent.resolve())
        text = render(view, "" if prefix == "." else prefix.replace(os.sep, "/"))
        try:
            if inside:
                catalog.write(out, text.encode())
            else:
                atomic_write(out, text.encode())
        except OSError as exc:
            if is_disk_full(exc):
                raise CatalogError(
                    f"{out}: no space left ({exc.strerror}); the previous page is unchanged",
                    code="catalog-disk-full",
                ) from exc
            raise FileAccessError.from_os_error(out, "write the page", exc) from exc
    return Page(out, view)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.parent.resolve().relative_to(directory.resolve())
    except (ValueError, OSError):
        return False
    return True


@contextlib.contextmanager
def _lock(catalog: Catalog, inside: bool) -> Iterator[None]:
    if not inside:
        yield
        return
    try:
        with catalog.locked():
            yield
    except OSError as exc:
        raise FileAccessError.from_os_error(catalog.directory, "lock the catalog", exc) from exc
