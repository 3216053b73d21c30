"""The digest of imagefactory's own code that decides a built disk's bytes.

A build-cache key input: editing any module listed here, or moving one,
changes the key, so the cache can never hand out a disk that older code made.
The list names modules by import name; a name that no longer resolves is an
error, not a silent skip (a moved module would otherwise drop out of the key
and serve stale disks). Whole packages are listed, not single files, so a new
module in one of them is covered without editing this list.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

from imagefactory.errors import BuildError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

#: Everything that turns a recipe into a disk, its audit, SBOM and labels:
#: the builder's steps (element, diskimage-builder call, tree, disk assembly),
#: the hardening and the two views it works through (``guest.tree`` over the
#: OS tree before it is a disk, the libguestfs layer), the audit, the labels
#: and SBOM, and the recipe model and vocabularies they read.
BYTE_DECIDING_MODULES = (
    "imagefactory.builder",
    "imagefactory.harden",
    "imagefactory.profiles",
    "imagefactory.audit",
    "imagefactory.guest",
    "imagefactory.labels",
    "imagefactory.sbom",
    "imagefactory.recipe",
    "imagefactory.vocab",
    "imagefactory.mirrors",
)
#: Package data that decides them too (hardening profiles, label schema).
BYTE_DECIDING_DATA = ("data/profiles", "data/labels")


def _module_files(name: str) -> Iterator[Path]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise BuildError(f"build cache key: module {name} cannot be found: {exc}") from exc
    if spec is None or spec.origin is None:
        raise BuildError(
            f"build cache key: module {name} cannot be found",
            hint="a module that decides a disk's bytes was moved: update BYTE_DECIDING_MODULES",
        )
    if spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            yield from sorted(Path(location).rglob("*.py"))
    else:
        yield Path(spec.origin)


def _data_files(name: str) -> Iterator[Path]:
    root = (PACKAGE_ROOT / name).resolve()  # data/labels links to the top-level labels/
    if not root.is_dir():
        raise BuildError(f"build cache key: package data {root} is missing")
    yield from sorted(p for p in root.rglob("*") if p.is_file())


def code_digest(
    modules: Iterable[str] = BYTE_DECIDING_MODULES, data: Iterable[str] = BYTE_DECIDING_DATA
) -> str:
    """``sha256:<hex>`` over the listed modules' and data's paths and contents."""
    h = hashlib.sha256()
    files = [f for m in modules for f in _module_files(m)]
    files += [f for d in data for f in _data_files(d)]
    for path in files:
        real = path.resolve()
        rel = real.relative_to(PACKAGE_ROOT.parent)
        h.update(str(rel).encode() + b"\0")
        h.update(real.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()
