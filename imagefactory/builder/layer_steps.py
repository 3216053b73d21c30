"""The build's ``layer`` step: reuse, or build and cache, the recipe's OS-tree layer.

See :mod:`imagefactory.builder.layer` for what a layer is and why the child's
diskimage-builder run gives the same tree as a full build. This step decides
whether the build uses one (``--no-layer-cache`` and recipes without a layer
do a full build), looks it up, builds it on a miss (a diskimage-builder run
of the layer element in ``staging/layer``), and leaves it in a private image
cache of the build (``staging/layer-image-cache``), beside the empty
debootstrap tarball DIB extracts in its place: a layer built now as the file
itself, a cached one as a symlink to ``/proc/<pid>/fd/<fd>``, the descriptor
this step opened and checked (:meth:`CacheEntry.open_checked`), so the hook
reads the very inode that was checked and nothing is copied. That is where
:func:`imagefactory.builder.pipeline.run_dib` points DIB; the extract element
goes into the recipe's elements.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from imagefactory.builder import dib
from imagefactory.builder.cache import BuildCache, CacheEntryChanged, cache_key, file_digest
from imagefactory.builder.cleanup import remove_tree
from imagefactory.builder.context import BuildContext
from imagefactory.builder.dibrun import read_dpkg_manifest, run_invocation
from imagefactory.builder.element import GeneratedElement, write_files
from imagefactory.builder.layer import (
    EXTRACT_ELEMENT,
    LAYER_ELEMENT,
    LAYER_FILE,
    LAYER_IN_CACHE,
    LAYER_KIND,
    LayerPlan,
    add_mount_points,
    check_tree,
    extract_element_files,
    layer_key_inputs,
    plan_layer,
    tarball_name,
    write_empty_tarball,
    write_layer_element,
)
from imagefactory.builder.slots import cache_slot
from imagefactory.errors import BuildError
from imagefactory.run import run

LAYER_WORK = "layer"
#: Layers kept per plan (the same base, packages and repositories): the newest.
#: An archive update makes a new layer of the same plan and the old one can no
#: longer hit; two, so two imagefactory versions on one host do not take
#: turns rebuilding theirs.
LAYERS_KEPT = 2
#: The build's private diskimage-builder image cache: an empty debootstrap
#: tarball, the layer beside it, and a link to the slot's apt archive cache.
LAYER_IMAGE_CACHE = "layer-image-cache"


def layer_cache(ctx: BuildContext) -> BuildCache:
    return BuildCache(ctx.settings.cache_dir, LAYER_KIND)


def layer_identity(
    ctx: BuildContext, plan: LayerPlan, elements: Path
) -> tuple[GeneratedElement, str]:
    """Write the layer element under ``elements``; it and the layer's cache key.

    Needs the ``cache`` step's key inputs (code, tools, base and archive).
    """
    keys = {r.repository.name: r.key.binary for r in ctx.repositories}
    element = write_layer_element(plan, elements, repository_keys=keys)
    names = {r.name for r in plan.repositories}
    verified = [r.to_dict() for r in ctx.repositories if r.repository.name in names]
    return element, cache_key(layer_key_inputs(plan, element, ctx.key_inputs, verified))


def prepare_layer(ctx: BuildContext) -> None:
    if not ctx.options.use_layer:
        ctx.layer = {"used": False, "reason": "not asked for (--no-layer-cache)"}
        ctx.progress.note("layer: not used (--no-layer-cache): a full build")
        return
    plan = plan_layer(ctx.recipe)
    if isinstance(plan, str):
        ctx.layer = {"used": False, "reason": plan}
        ctx.progress.note(f"layer: none ({plan}): a full build")
        return
    work = ctx.staging / LAYER_WORK
    element, key = layer_identity(ctx, plan, work / "elements")
    cache = layer_cache(ctx)
    entry = cache.lookup(key)
    target = ctx.staging / LAYER_IMAGE_CACHE
    target.mkdir()
    info: dict[str, Any] = {"key": key, "packages": list(plan.packages)}
    if entry is not None and LAYER_FILE in entry.files:
        try:
            # Not copied: the hook reads the entry's own file, through the
            # descriptor checked here (a copy was a write of the whole layer per
            # build, flushed by DIB's sync).
            ctx.layer_fd = entry.open_checked(LAYER_FILE)
        except CacheEntryChanged as exc:
            cache.evict(key, str(exc))
            entry = None
        else:
            os.symlink(f"/proc/{os.getpid()}/fd/{ctx.layer_fd}", target / LAYER_IN_CACHE)
            ctx.layer = {**info, "used": True, "hit": True, "created": entry.record.get("created")}
            _extract_element(ctx, target, entry.record.get("attrs", []))
            ctx.progress.note(
                f"layer: hit ({key[:12]}), built {entry.record.get('created', '?')}:"
                f" the base and {len(plan.packages)} packages (the boot essentials and those"
                " of the recipes it extends)"
            )
            remove_tree(work)
            return
    if entry is not None:
        # Cached as refused: building it again would be refused again.
        reason = str(entry.record.get("refused", "refused"))
        ctx.layer = {**info, "used": False, "reason": reason}
        ctx.progress.note(f"layer: refused ({key[:12]}): {reason}: a full build")
        remove_tree(work)
        return
    ctx.progress.note(
        f"layer: miss ({key[:12]}), building it: the base and {len(plan.packages)} packages"
        " (the boot essentials and those of the recipes it extends)"
    )
    tarball, record = _build_layer(ctx, plan, element.root, work)
    record["key"] = key
    pruned = prune_layers(cache, key, record["plan"])
    if pruned:
        ctx.progress.note(
            f"layer: removed {len(pruned)} older layer(s) of the same plan"
            f" ({', '.join(k[:12] for k in pruned)}), superseded by archive updates"
        )
    if tarball is None:
        cache.store(key, {}, {}, record)
        ctx.layer = {**info, "used": False, "reason": record["refused"]}
        ctx.progress.note(f"layer: refused: {record['refused']}: a full build")
    else:
        cache.store(key, {LAYER_FILE: tarball}, {LAYER_FILE: file_digest(tarball)}, record)
        # Built here, by this build: used from where it was made.
        tarball.rename(target / LAYER_IN_CACHE)
        ctx.layer = {**info, "used": True, "hit": False, "created": record["created"]}
        _extract_element(ctx, target, record["attrs"])
    remove_tree(work)


def prune_layers(cache: BuildCache, key: str, plan: Any, keep: int = LAYERS_KEPT) -> list[str]:
    """Remove the layers of ``plan`` beyond the newest ``keep``, counting the one
    about to be stored as ``key``; the keys removed, oldest first."""
    wanted = json.loads(json.dumps(plan))  # as stored: lists, not tuples
    same = sorted(
        (str(record.get("created", "")), name)
        for name, record in cache.records().items()
        if name != key and record.get("plan") == wanted
    )
    doomed = [name for _created, name in same[: max(0, len(same) - (keep - 1))]]
    for name in doomed:
        cache.remove(name)
    return doomed


def _build_layer(
    ctx: BuildContext, plan: LayerPlan, elements: Path, work: Path
) -> tuple[Path | None, dict[str, Any]]:
    """Run DIB with the layer element; its tree as a zstd tarball, or why not."""
    archive = ctx.need_archive()
    (work / dib.WORK_DIR_NAME).mkdir()
    recipe = plan.recipe
    with cache_slot(ctx.settings.dib_image_cache) as image_cache:
        call = dib.invocation(
            recipe,
            archive=archive,
            elements_path=elements,
            element_name=LAYER_ELEMENT,
            output_dir=work,
            image_cache=image_cache,
            keyrings=dict(ctx.settings.keyrings),
        )
        run_invocation(ctx, call, work, label="layer")
    record: dict[str, Any] = {
        "schema": "imagefactory/layer-record/v1",
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plan": plan.canonical(),
        "packages": read_dpkg_manifest(call.manifest_dir),
    }
    tar = call.tar_path
    ctx.progress.status("layer: checking the tree")
    check = check_tree(tar)
    if check.refused is not None:
        record["refused"] = check.refused
        return None, record
    record["attrs"] = check.attrs
    add_mount_points(tar)
    ctx.progress.status("layer: compressing the tree")
    # zstd -1: extracts in about a third of gzip's time (the child's run waits
    # on it) and is smaller; -T0: compresses on every core; --rm: the tar goes.
    zst = tar.with_name(tar.name + ".zst")
    run(["zstd", "-1", "-T0", "-q", "--rm", str(tar), "-o", str(zst)], logfile=ctx.logfile)
    if not zst.is_file():
        raise BuildError(f"zstd left no {zst}")
    return zst, record


def _extract_element(ctx: BuildContext, target: Path, attrs: list[list[str]]) -> None:
    """The empty tarball DIB extracts, and the element that extracts the layer
    and sets its extended attributes again."""
    if ctx.layer is None:
        raise BuildError("internal error: no layer to extract")
    ctx.layer["attrs"] = len(attrs)
    write_empty_tarball(target / tarball_name(ctx.recipe))
    write_files(extract_element_files(attrs), ctx.need_element().root, EXTRACT_ELEMENT)


def release_layer(ctx: BuildContext) -> None:
    """Close the cached layer's descriptor (once DIB has extracted it, or the build failed)."""
    if ctx.layer_fd is not None:
        os.close(ctx.layer_fd)
        ctx.layer_fd = None


def extra_elements(ctx: BuildContext) -> tuple[str, ...]:
    """The elements the recipe's DIB run gets besides its own: the layer's extract hook."""
    return (EXTRACT_ELEMENT,) if (ctx.layer or {}).get("used") else ()


def image_cache_for(ctx: BuildContext, slot: Path) -> Path:
    """The image cache the recipe's DIB run gets: the slot's, or the layer's private one.

    The private one holds the empty debootstrap tarball and the layer and
    links ``apt`` to the slot's apt archive cache (the packages downloaded
    before stay shared).
    """
    if not (ctx.layer or {}).get("used"):
        return slot
    private = ctx.staging / LAYER_IMAGE_CACHE
    (slot / "apt").mkdir(exist_ok=True)
    link = private / "apt"
    if not link.is_symlink():
        os.symlink(slot / "apt", link)
    return private
