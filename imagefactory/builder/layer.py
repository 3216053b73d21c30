"""The OS-tree layer a recipe that ``extends`` others starts from.

A recipe matrix (the ATLAS, CMS, LHCb worker nodes of one site) extends one
site base: each recipe's diskimage-builder run would repeat the same
debootstrap and the same package installs before it adds its few own. The
*layer* is that shared part, built once and cached: the OS tree of the base
distribution with the boot essentials (:data:`~imagefactory.builder.element.BOOT_PACKAGES`,
GRUB, the kernel) and the packages the parents name, from the repositories
the parents name -- nothing else of the parents (their files, services and
scripts come later in the child's own run, in the order a full build runs
them).

How the child starts from it: diskimage-builder's ``debootstrap`` element
extracts ``$DIB_IMAGE_CACHE/debootstrap-<distro>-<release>-<arch>.tar.gz``
instead of running debootstrap when the cache is on
(``DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE``). The child's run gets a private image
cache holding an *empty* tarball under that name, the layer beside it
(:data:`LAYER_IN_CACHE`, zstd: ``tar -xzf`` of the layer was most of the
child's root phase; a cached layer as a link to the descriptor the layer
step checked, never a copy) and the shared apt archive cache; one more element's
root.d hook, right after the debootstrap element's, checks that the target
is still empty and extracts the layer into it (``tar --numeric-owner
--zstd``, as DIB extracts its own tarball). So DIB runs every hook of the
child's element exactly as in a full build, on a tree whose packages are
already there: apt installs only the delta. The layer is DIB's own ``-t
tar`` output of a run with the layer element, i.e. the tree after DIB's
finalise and cleanup steps (build-time state such as the blocked
``start-stop-daemon``, the host's ``resolv.conf``, dpkg's unsafe-io setting,
undone), which the child's run re-applies and undoes again.

That extraction (no ``--xattrs``, as DIB's) drops extended attributes,
where a full build keeps them (systemd's ACLs on ``/var/log/journal``, file
capabilities): the layer records those of its tree, and the same hook sets
them again (:mod:`imagefactory.builder.layerattrs`).

Refused, with the reason (the build is then a full one): a recipe with extra
diskimage-builder elements (their hooks can change any phase, also the
layer's), and a layer tree holding anything DIB's extraction and that hook
would not give back as it was: a tar member of another type, an extended
attribute other than a POSIX ACL or a file capability, or one on a symlink or
device node. A refused layer is cached as refused, so it is not built again
for nothing.

The key covers everything that decides the layer, as the build cache's does:
its canonical plan (base, boot mode, packages, repositories), the layer
element's digest, imagefactory's code key, the tool versions, the mirror and
the archive's ``InRelease`` digests, and the layer repositories' verified
Release digests. The entry is a build-cache entry of its own kind
(:class:`~imagefactory.builder.cache.BuildCache` ``layers``): written
atomically, its file identity re-checked on every hit, copied out of the
checked descriptor, evicted if it changed.
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.builder.element import (
    SCRIPT_HEADER,
    GeneratedElement,
    base_files,
    install_stages,
    package_installs,
    repositories_files,
    write_files,
)
from imagefactory.builder.layerattrs import ALLOWED_ATTRS
from imagefactory.recipe import Recipe, Repository

LAYER_ELEMENT = "imagefactory-layer"
#: The layer's tarball in its cache entry: zstd, the fastest to extract.
LAYER_FILE = "layer.tar.zst"
#: Its name in the child's private image cache, where the extract hook reads it.
LAYER_IN_CACHE = "imagefactory-layer.tar.zst"
LAYER_SCHEMA = "imagefactory/layer/v2"
#: Kind of build-cache entry (``<cache>/layers/<key>/``).
LAYER_KIND = "layers"
#: Tar member types the extraction (``tar --numeric-owner``) restores as they were.
_PLAIN_TYPES = (
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
)
#: pax header prefixes of extended attributes and ACLs (GNU tar, libarchive).
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl.")
_GNU_XATTR = "SCHILY.xattr."
#: The element whose root.d hook extracts the layer in the child's run and sets
#: its extended attributes again.
EXTRACT_ELEMENT = "imagefactory-layer-root"
#: After 08-debootstrap (which extracts the empty tarball: dib-run-parts sorts
#: equal numbers by name), before every other root.d hook.
EXTRACT_HOOK = "root.d/08-imagefactory-layer"
ATTRS_FILE = "root.d/imagefactory-layer/attrs.json"
#: Mount points DIB's tar output leaves out and its next run mounts on.
_MOUNT_POINTS = ("./proc", "./sys")


@dataclass(frozen=True)
class LayerPlan:
    """What goes into a recipe's layer: base, boot mode, packages, repositories."""

    recipe: Recipe
    #: What the layer element asks apt for (boot essentials first).
    packages: tuple[str, ...]
    repositories: tuple[Repository, ...]

    def canonical(self) -> dict[str, Any]:
        base = self.recipe.base
        return {
            "base": {
                "distro": base.distro.value,
                "release": base.release,
                "version": base.version,
                "arch": base.arch.value,
            },
            "boot": self.recipe.boot.value,
            "packages": list(self.packages),
            "repositories": [r.canonical() for r in self.repositories],
        }


def plan_layer(recipe: Recipe) -> LayerPlan | str:
    """The layer ``recipe`` can start from, or why it has none."""
    inherited = recipe.inherited
    if inherited is None:
        return "the recipe extends no other"
    if recipe.elements:
        return (
            f"the recipe adds diskimage-builder elements ({', '.join(recipe.elements)}),"
            " whose hooks can change any phase"
        )
    missing = [p for p in inherited.packages if p not in recipe.packages]
    if missing:  # lists are joined by extends: never, unless that rule changes
        return f"internal: inherited packages {', '.join(missing)} are not in the recipe"
    # The first of the element's two apt transactions (the second is the recipe's own).
    packages, _ = install_stages(recipe)
    names = set(inherited.repositories)
    repositories = tuple(r for r in recipe.repositories if r.name in names)
    return LayerPlan(recipe=recipe, packages=tuple(packages), repositories=repositories)


def layer_files(
    plan: LayerPlan, repository_keys: Mapping[str, bytes] | None = None
) -> dict[str, tuple[bytes, int]]:
    """The layer element: the recipe element's package part and nothing else."""
    files: dict[str, tuple[bytes, int]] = {}
    if plan.repositories:
        files.update(repositories_files(plan.repositories, repository_keys or {}))
    files.update(base_files())
    files["package-installs.yaml"] = package_installs(list(plan.packages))
    readme = b"Generated by imagefactory: an OS-tree layer (base + packages).\n"
    files["README.rst"] = (readme, 0o644)
    return files


def write_layer_element(
    plan: LayerPlan, elements_root: Path, repository_keys: Mapping[str, bytes] | None = None
) -> GeneratedElement:
    """Write the layer element under ``elements_root/imagefactory-layer``."""
    return write_files(layer_files(plan, repository_keys), elements_root, LAYER_ELEMENT)


def layer_key_inputs(
    plan: LayerPlan,
    element: GeneratedElement,
    build_inputs: Mapping[str, Any],
    repositories: list[dict[str, Any]],
) -> dict[str, Any]:
    """The layer's cache-key inputs: its plan and element, and the build's code,
    tools and base (mirror, archive digests), plus its repositories' verified
    Release digests (``repositories``: the verified records of the layer's)."""
    inputs: dict[str, Any] = {
        "schema": LAYER_SCHEMA,
        "layer": plan.canonical(),
        "element": element.digest,
        "code": build_inputs["code"],
        "tools": build_inputs["tools"],
        "base": build_inputs["base"],
    }
    if repositories:
        inputs["repositories"] = repositories
    return inputs


def tarball_name(recipe: Recipe) -> str:
    """The name diskimage-builder's debootstrap element looks for in its image cache."""
    base = recipe.base
    return f"debootstrap-{base.distro.value}-{base.release}-{base.arch.dib_arch}.tar.gz"


@dataclass(frozen=True)
class TreeCheck:
    """What :func:`check_tree` found: why the tree is no layer, or its attributes."""

    refused: str | None
    #: ``[path, attribute, base64 value]`` for each extended attribute in the tree.
    attrs: list[list[str]]


def check_tree(tar: Path) -> TreeCheck:
    """Whether the tree in DIB's tar output can be a layer, and its extended attributes.

    Allowlist: every member a plain file, directory, link or device node (the
    child's run extracts the layer with ``tar --numeric-owner``, which
    restores exactly those), extended attributes only POSIX ACLs and file
    capabilities and only on regular files and directories (set again by the
    extract hook).
    """
    attrs: list[list[str]] = []
    with tarfile.open(tar, "r:") as archive:
        for member in archive:
            if member.type not in _PLAIN_TYPES:
                return TreeCheck(f"{member.name} is a tar member of type {member.type!r}", [])
            for key, value in sorted(member.pax_headers.items()):
                if not key.startswith(_XATTR_PREFIXES):
                    continue
                name = key.removeprefix(_GNU_XATTR)
                if not key.startswith(_GNU_XATTR) or name not in ALLOWED_ATTRS:
                    return TreeCheck(
                        f"{member.name} has the extended attribute {key}, which a layer"
                        " cannot carry (only POSIX ACLs and file capabilities)",
                        [],
                    )
                if not (member.isreg() or member.isdir()):
                    return TreeCheck(
                        f"{member.name} has the extended attribute {key} but is neither"
                        " a regular file nor a directory",
                        [],
                    )
                # tarfile decodes pax values as UTF-8 with surrogateescape: the raw bytes.
                raw = value.encode("utf-8", "surrogateescape")
                path = member.name.removeprefix("./")
                attrs.append([path, name, base64.b64encode(raw).decode()])
    return TreeCheck(None, attrs)


def extract_element_files(attrs: list[list[str]]) -> dict[str, tuple[bytes, int]]:
    """The element whose root.d hook extracts the layer and sets its attributes again.

    The hook refuses a target that is not empty: the debootstrap element
    must have extracted the empty tarball, not run debootstrap (or anything
    else have written there), or the layer would land on another tree.
    """
    hook = (
        SCRIPT_HEADER + "# The OS-tree layer: the debootstrap element extracted an empty tarball\n"
        "# in its place; the layer (zstd) is extracted here, as DIB extracts its own.\n"
        f'layer="$DIB_IMAGE_CACHE/{LAYER_IN_CACHE}"\n'
        'if [ -n "$(ls -A "$TARGET_ROOT")" ]; then\n'
        '    echo "imagefactory: $TARGET_ROOT is not empty before the layer is extracted:"'
        ' "the debootstrap element did not take the empty tarball" >&2\n'
        "    exit 1\n"
        "fi\n"
        'tar -C "$TARGET_ROOT" --numeric-owner --zstd -xf "$layer"\n'
    )
    files: dict[str, tuple[bytes, int]] = {}
    if attrs:
        python = shlex.quote(sys.executable)
        hook += (
            "# Its extended attributes, which tar without --xattrs did not restore.\n"
            f'exec {python} -m imagefactory.builder.layerattrs "$TARGET_ROOT"'
            f' "$(dirname "$0")/{Path(ATTRS_FILE).relative_to("root.d")}"\n'
        )
        files[ATTRS_FILE] = (json.dumps(attrs, indent=1).encode(), 0o644)
    files[EXTRACT_HOOK] = (hook.encode(), 0o755)
    return files


def write_empty_tarball(path: Path) -> None:
    """The empty gzipped tarball the debootstrap element extracts in the layer's place."""
    with tarfile.open(path, "x:gz", format=tarfile.PAX_FORMAT):
        pass


def add_mount_points(tar: Path) -> None:
    """Append ``/proc`` and ``/sys`` (DIB's tar output has neither; its next run mounts there)."""
    with tarfile.open(tar, "a") as archive:
        present = set(archive.getnames())
        for name in _MOUNT_POINTS:
            if name in present:
                continue
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o555
            archive.addfile(info)
