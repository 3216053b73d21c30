"""The build, as a flat list of named steps over one context object.

Read :data:`STEPS` top to bottom and you have the build: check the host,
resolve the package archive, generate the element, look the inputs up in the
cache, check the mirror's indexes and the recipe's packages (a miss only),
run diskimage-builder, finish its OS tree, harden the tree, make the bootable
disk from it, audit the disk and read its facts (the boot test runs
alongside, from here to the end of the label step), write the SBOM and
labels, collect the boot test, store it in the cache, write the build record.
:func:`build` runs them in a staging directory and publishes the result
atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefactory.aptrepo import add_indexes, origin_sources, verify_repositories
from imagefactory.boot.qemu import BootResult, boot_test, uefi_firmware
from imagefactory.builder import assemble as assembler
from imagefactory.builder import dib
from imagefactory.builder.background import Background
from imagefactory.builder.bootjob import BootJob
from imagefactory.builder.cache import CacheEntryChanged, cache_key, file_digest
from imagefactory.builder.cacheprune import prune
from imagefactory.builder.cleanup import remove_tree
from imagefactory.builder.codekey import code_digest
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.builder.dibrun import read_dpkg_manifest, run_invocation
from imagefactory.builder.element import write_element
from imagefactory.builder.label_steps import (
    AUDIT_FILE,
    METADATA_FILES,
    audit_disk,
    harden_tree,
    label_disk,
)
from imagefactory.builder.layer_steps import (
    LAYER_IMAGE_CACHE,
    extra_elements,
    image_cache_for,
    prepare_layer,
    release_layer,
)
from imagefactory.builder.output import (
    LOG_FILE,
    RECORD_FILE,
    final_dir,
    output_unchanged,
    publish,
    read_record,
    record_output,
    staging_dir,
)
from imagefactory.builder.rootfs import OUTPUT_DIR, TREE_DIR, mount_image, output_dir, release_tree
from imagefactory.builder.scratch import fits_in_memory
from imagefactory.builder.slots import cache_slot
from imagefactory.errors import AuditError, BootTestError, BuildError, ImageFactoryError
from imagefactory.host.accel import probe_in_background
from imagefactory.host.tools import require_build_host, require_tools, tool_versions
from imagefactory.mirrors import (
    check_indexes,
    fetch_releases,
    release_fingerprint,
    resolve_archive,
)
from imagefactory.model.imagedir import LABELS_NAME
from imagefactory.packageindex import check_recipe_packages, load_index
from imagefactory.profiles import load_profile
from imagefactory.progress import Progress
from imagefactory.recipe import Recipe
from imagefactory.settings import Settings
from imagefactory.vocab import BootMode

log = logging.getLogger(__name__)

RECORD_SCHEMA = "imagefactory/build-record/v1"
BOOT_LOG = "boot-test.log"
FAILED_DIR = ".failed"


@dataclass(frozen=True)
class BuildResult:
    """A published (or already present) build."""

    directory: Path
    record: dict[str, Any]
    cache_hit: bool
    published: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "cache_hit": self.cache_hit,
            "published": self.published,
            "images": self.record["disk"]["files"],
            "recipe_digest": self.record["recipe"]["digest"],
            "boot_test": self.record.get("boot_test"),
            "audit": self.record.get("audit"),
            "labels": str(self.directory / LABELS_NAME),
            "timings": self.record["timings"],
            "layer": self.record.get("layer"),
        }


# -- the steps ---------------------------------------------------------------


def check_host(ctx: BuildContext) -> None:
    require_build_host(ctx.recipe.base.arch, ctx.recipe.boot)
    if ctx.options.boot_test and ctx.recipe.boot is BootMode.UEFI:
        uefi_firmware(ctx.recipe.base.arch)  # the firmware, before the long build
    dib.check_keyring(ctx.recipe, dict(ctx.settings.keyrings))
    if ctx.recipe.repositories:
        require_tools("gpgv")  # verifies the repositories' Release files


def resolve_base(ctx: BuildContext) -> None:
    """The archive and what the cache key needs of it: its suites' ``InRelease``
    digests and the recipe's repositories, verified. Checking the indexes and
    the recipe's packages waits for a cache miss (:func:`check_packages`)."""
    base = ctx.recipe.base
    ctx.archive = resolve_archive(base.distro, base.release, base.arch, ctx.settings.mirrors)
    ctx.progress.note(f"archive {ctx.archive.mirror} ({ctx.archive.origin})")
    # Fetched every build, cache hit or not: an archive update changes the key.
    ctx.releases = fetch_releases(ctx.archive)
    # The recipe's own repositories, each against its pinned key alone.
    ctx.repositories = verify_repositories(
        ctx.recipe.repositories,
        base.arch,
        keys_dir=ctx.settings.repository_keys,
        cache_dir=ctx.settings.cache_dir / "package-indexes",
        on_status=ctx.progress.status,
    )
    for repo in ctx.repositories:
        ctx.progress.note(
            f"repository {repo.repository.name}: {repo.repository.url} verified with key"
            f" {repo.key.fingerprint}"
        )
    ctx.fingerprint = release_fingerprint(ctx.releases)


def check_packages(ctx: BuildContext) -> None:
    """Before diskimage-builder's apt: the mirror's indexes match its ``InRelease``
    (not caught mid-sync), and every package the recipe names is in them; the
    verified indexes the label step matches each package's origin in.

    Only on a cache miss: the checks protect the apt run a hit does not make
    (the hit's inputs, archive digests included, are those of a build that
    passed), and a hit's SBOM, origins included, comes from the cache. The
    accelerator probe starts here too, for the same reason.
    """
    # The appliance and the boot test need the accelerator only after
    # diskimage-builder: a probe that has to time out costs nothing there. Not
    # before the cache lookup: a hit would wait for the probe's qemu to end.
    probe_in_background(
        ctx.settings.accel, "qemu-system-x86_64", ctx.settings.cache_dir / "accel.json"
    )
    archive, base = ctx.need_archive(), ctx.recipe.base
    indexes = ctx.settings.cache_dir / "package-indexes"
    check_indexes(archive, base.arch, ctx.releases)
    archive_index = load_index(
        archive, base.arch, ctx.releases, cache_dir=indexes, on_status=ctx.progress.status
    )
    ctx.origin_sources = origin_sources(archive_index, ctx.repositories)
    # Every unknown package at once, at its recipe line, before DIB's 40 s of apt.
    check_recipe_packages(
        ctx.recipe,
        archive,
        ctx.releases,
        cache_dir=indexes,
        on_status=ctx.progress.status,
        extra=lambda index: add_indexes(index, ctx.repositories),
        loaded=archive_index,
    )


def generate_element(ctx: BuildContext) -> None:
    keys = {r.repository.name: r.key.binary for r in ctx.repositories}
    ctx.element = write_element(ctx.recipe, ctx.staging / "elements", repository_keys=keys)


def lookup_cache(ctx: BuildContext) -> None:
    archive, element = ctx.need_archive(), ctx.need_element()
    ctx.versions = tool_versions(ctx.settings.cache_dir / "tool-versions.json")
    ctx.profile = load_profile(ctx.recipe.hardening)
    base = ctx.recipe.base
    ctx.key_inputs = {
        "recipe": ctx.recipe.canonical(),
        # The profile's content, not only its name: editing it rebuilds.
        "hardening": {"profile": ctx.profile.digest},
        # The code that builds, assembles, hardens, audits and labels (the
        # disk's audit, SBOM and labels are cached with it): editing or moving
        # any of it rebuilds.
        "code": code_digest(),
        "element": element.digest,
        "tools": ctx.versions,
        "base": {
            "distro": str(base.distro),
            "release": base.release,
            "arch": str(base.arch),
            "mirror": archive.mirror,
            "security_mirror": archive.security_mirror,
            "archive": ctx.fingerprint,
        },
    }
    if ctx.repositories:
        # Each repository's URL, suites, components, key and verified Release:
        # a repository that publishes an update misses the cache.
        ctx.key_inputs["repositories"] = [r.to_dict() for r in ctx.repositories]
    ctx.key = cache_key(ctx.key_inputs)
    if not ctx.options.use_cache:
        ctx.progress.note("cache: not used (--no-cache)")
        return
    ctx.hit = ctx.cache.lookup(ctx.key)
    if ctx.hit is None:
        ctx.progress.note(f"cache: miss ({ctx.key[:12]})")
        return
    record = ctx.hit.record
    ctx.boot = record.get("boot_test")
    present = _published_already(ctx)
    if present is not None:
        # The output already holds this very build: publishing will keep it and drop
        # the staging directory, so nothing is copied (a rebuild costs no disk I/O).
        ctx.images = present
        ctx.digests = {name: str(ctx.hit.files[name]["sha256"]) for name in ctx.images}
        ctx.disk = dict(record.get("disk", {}))
        ctx.packages = list(record.get("packages", []))
        ctx.hardening = dict(record.get("hardening") or {})
        ctx.progress.note(f"cache: hit ({ctx.key[:12]}), already in the output: nothing copied")
        return
    try:
        materialized = ctx.hit.materialize(ctx.staging)
    except CacheEntryChanged as exc:
        # Changed between the check and the copy: never served, built afresh.
        for name in ctx.hit.files:
            (ctx.staging / name).unlink(missing_ok=True)
        ctx.cache.evict(ctx.key, str(exc))
        ctx.hit = None
        ctx.progress.note(f"cache: miss ({ctx.key[:12]}, the entry changed)")
        return
    ctx.images = {name: path for name, path in materialized.items() if name not in METADATA_FILES}
    ctx.digests = {name: str(ctx.hit.files[name]["sha256"]) for name in ctx.images}
    ctx.disk = dict(record.get("disk", {}))
    ctx.packages = list(record.get("packages", []))
    ctx.hardening = dict(record.get("hardening") or {})
    ctx.progress.note(f"cache: hit ({ctx.key[:12]}), built {record.get('created', '?')}")


def _published_already(ctx: BuildContext) -> dict[str, Path] | None:
    """The disks of the output directory when it already holds this build, unchanged.

    Decided by file identity (:func:`~imagefactory.builder.output.output_unchanged`:
    exactly the files published for this key, each with the identity recorded
    then), never by names. Only when nothing later needs the disk in the
    staging directory: no boot test still to run.
    :func:`~imagefactory.builder.output.publish` checks again and keeps the
    output as it is (and refuses to publish a staging directory without its
    disks, should the output change in between).
    """
    if ctx.hit is None:
        return None
    if ctx.options.boot_test and not (ctx.boot and ctx.boot.get("passed")):
        return None
    final = final_dir(ctx.staging.parent, ctx.recipe.name, ctx.recipe.version)
    if not output_unchanged(final, ctx.key, _output_records(ctx.settings)):
        return None
    old = read_record(final)
    if old is None or old.get("cache", {}).get("key") != ctx.key:
        return None
    images = {name: final / name for name in ctx.hit.files if name not in METADATA_FILES}
    return images or None


def _output_records(settings: Settings) -> Path:
    """Where the identities of published outputs are recorded (see builder.output)."""
    return settings.cache_dir / "outputs"


def run_dib(ctx: BuildContext) -> None:
    archive, element = ctx.need_archive(), ctx.need_element()
    (ctx.staging / dib.WORK_DIR_NAME).mkdir()
    # DIB's file system image is at most twice the disk (the content must fit the
    # disk); in memory only if the raw disk the assemble step makes fits beside it.
    size = 2 * ctx.recipe.disk.size
    out = output_dir(
        ctx.staging,
        size,
        in_memory=fits_in_memory(ctx.recipe.disk.size + size),
        logfile=ctx.logfile,
    )
    with cache_slot(ctx.settings.dib_image_cache) as slot:
        call = dib.invocation(
            ctx.recipe,
            archive=archive,
            elements_path=element.root,
            element_name=element.name,
            output_dir=ctx.staging,
            # The layer, when there is one, where DIB looks for its debootstrap tarball.
            image_cache=image_cache_for(ctx, slot),
            keyrings=dict(ctx.settings.keyrings),
            extra_elements=extra_elements(ctx),
            output_type="raw",
            image_dir=out,
        )
        try:
            run_invocation(ctx, call, ctx.staging)
        finally:
            release_layer(ctx)
    ctx.packages = read_dpkg_manifest(call.manifest_dir)
    remove_tree(ctx.staging / LAYER_IMAGE_CACHE)


def _dib_image(ctx: BuildContext) -> Path:
    """The root file system image ``run_dib`` had DIB write (``-t raw``)."""
    return ctx.staging / OUTPUT_DIR / f"{dib.ROOTFS_NAME}.raw"


def prepare_tree(ctx: BuildContext) -> None:
    recipe = ctx.recipe
    tree = ctx.staging / TREE_DIR
    mount_image(_dib_image(ctx), tree, ctx.logfile)
    try:
        ctx.tree = assembler.prepare(
            tree,
            ctx.staging,
            disk_size=recipe.disk.size,
            title=f"{recipe.name} {recipe.version}",
            boot=recipe.boot,
            arch=recipe.base.arch,
            logfile=ctx.logfile,
        )
    except BaseException:
        release_tree(tree, ctx.logfile)
        raise
    remove_tree(ctx.staging / OUTPUT_DIR / f"{dib.ROOTFS_NAME}.d")


def assemble_disk(ctx: BuildContext) -> None:
    recipe = ctx.recipe
    if ctx.tree is None:
        raise BuildError("internal error: the tree step has not run")
    result = assembler.make_disk(
        ctx.tree,
        ctx.staging,
        formats=recipe.disk.formats,
        basename=ctx.basename,
        compress=recipe.disk.compress,
        logfile=ctx.logfile,
    )
    ctx.tree = None
    _dib_image(ctx).unlink()
    release_tree(ctx.staging / OUTPUT_DIR, ctx.logfile)
    # Final from here on: the disk is made from the hardened tree.
    ctx.images = {path.name: path for path in result.images.values()}
    # Hashed, and copied into the cache, while the audit runs (builder.background);
    # the label and store steps collect them.
    ctx.start_digests()
    _start_cache_copy(ctx)
    ctx.disk = {
        "root_uuid": result.root_uuid,
        "kernel": result.kernel,
        "content_bytes": result.content_bytes,
        "virtual_size": recipe.disk.size,
        # What the assembler was asked to make; the labels' boot mode is read
        # back from the finished image (guest.handle.boot_mode).
        "boot_mode": str(recipe.boot),
        "partition_table": result.partition_table,
        **({"esp_uuid": result.esp_uuid} if result.esp_uuid else {}),
        **({"compression": assembler.COMPRESSION_TYPE} if recipe.disk.compress else {}),
    }


def _boot(ctx: BuildContext, stop: threading.Event | None = None) -> BootResult:
    fmt = ctx.recipe.disk.formats[0]
    image = ctx.staging / f"{ctx.basename}.{fmt}"
    return boot_test(
        image,
        str(fmt),
        ctx.recipe.base.arch,
        ctx.staging / BOOT_LOG,
        accel_setting=ctx.settings.accel,
        accel_cache=ctx.settings.cache_dir / "accel.json",
        timeout=ctx.options.boot_timeout,
        boot_mode=BootMode(ctx.disk.get("boot_mode", BootMode.BIOS)),
        stop=stop,
    )


def check_disk(ctx: BuildContext) -> None:
    """The audit; with ``--boot-test`` the boot test starts alongside it.

    Both only read the finished disk (the audit through libguestfs' overlay,
    qemu with ``snapshot=on``). The boot test keeps running through the label
    step and is collected by the ``boot-test`` step; a failed audit waits for
    it, so the error reports both.
    """
    if ctx.options.boot_test:
        name = ctx.primary_image
        ctx.boot_job = BootJob(
            lambda stop: _boot(ctx, stop), ctx.progress, f"booting {name} under qemu"
        )
        ctx.boot_job.start()
    try:
        audit_disk(ctx)
    except AuditError as exc:
        if ctx.boot_job is not None:
            ctx.progress.status("the audit failed; the boot test alongside finishes")
            result = _collect_boot(ctx, ctx.boot_job)
            state = "passed" if result.passed else "failed"
            exc.message += f"; the boot test alongside {state}: {result.reason}"
            exc.findings.append(f"[{state.upper()}] boot-test: {result.reason} (see {BOOT_LOG})")
        raise


def _collect_boot(ctx: BuildContext, job: BootJob) -> BootResult:
    result = job.wait(lambda: ctx.progress.status("waiting for the boot test"))
    ctx.boot_job = None
    ctx.boot = result.to_dict()
    ctx.boot["console_log"] = BOOT_LOG
    return result


def run_boot_test(ctx: BuildContext) -> None:
    if ctx.hit is not None and ctx.boot is not None and ctx.boot.get("passed"):
        ctx.progress.note(
            f"boot test: passed when this disk was built ({ctx.boot.get('seconds')}s); "
            "the cached disk is byte-identical (use --no-cache to boot it again)"
        )
        return
    if ctx.boot_job is not None:
        result = _collect_boot(ctx, ctx.boot_job)
    else:
        fmt = ctx.recipe.disk.formats[0]
        ctx.progress.status(f"booting {ctx.basename}.{fmt} under qemu")
        result = _boot(ctx)
        ctx.boot = result.to_dict()
        ctx.boot["console_log"] = BOOT_LOG
    if not result.passed:
        audit = "; the audit passed" if ctx.audit is not None and ctx.audit.passed else ""
        raise BootTestError(f"boot test failed: {result.reason}{audit}", hint=f"see {BOOT_LOG}")
    ctx.progress.note(f"boot test: {result.reason} ({result.accel})")


def _start_cache_copy(ctx: BuildContext) -> None:
    """Copy the images into a pending cache entry while the audit runs (see store_cache)."""
    pending = ctx.cache.begin(ctx.key)
    if pending is None:
        return
    images = dict(ctx.images)

    def copy() -> None:
        for name, path in images.items():
            pending.add(name, path)

    ctx.cache_copy = (pending, Background("imagefactory-cache-copy", copy))


def store_cache(ctx: BuildContext) -> None:
    """Commit the cache entry the images were copied into alongside the audit.

    The metadata files go in now; every copy must hash to the build's digest.
    A cache that cannot be written only costs time: the build stands.
    """
    metadata = {name: ctx.staging / name for name in METADATA_FILES}
    digests = {**ctx.digests, **{name: file_digest(path) for name, path in metadata.items()}}
    if ctx.cache_copy is None:
        ctx.cache.store(ctx.key, {**ctx.images, **metadata}, digests, _record(ctx, {}))
        return
    pending, copying = ctx.cache_copy
    try:
        copying.result()
        for name, path in metadata.items():
            pending.add(name, path)
        pending.commit(digests, _record(ctx, {}))
    except OSError as exc:
        log.warning("could not store the build in the cache: %s", exc)
    finally:
        pending.discard()
        ctx.cache_copy = None


def prune_cache(ctx: BuildContext) -> None:
    """Keep the build cache within ``build.cache_max_size`` (least recently used go first;
    this build's entry and its layer stay)."""
    keep = {ctx.key, *([str(ctx.layer["key"])] if ctx.layer and ctx.layer.get("key") else [])}
    done = prune(ctx.settings.cache_dir, ctx.settings.cache_max_size, keep)
    if done.removed or done.leftovers:
        ctx.progress.note(
            f"cache: removed {len(done.removed)} least recently used entries"
            f" ({done.freed / 1024**3:.1f} GiB) and {len(done.leftovers)} left-overs of"
            f" interrupted builds; {done.kept_bytes / 1024**3:.1f} GiB kept"
            f" (build.cache_max_size {ctx.settings.cache_max_size / 1024**3:.1f} GiB)"
        )


def _discard_cache_copy(ctx: BuildContext) -> None:
    """A failed build's pending cache entry: its copy waited for, then removed."""
    if ctx.cache_copy is None:
        return
    pending, copying = ctx.cache_copy
    with contextlib.suppress(BaseException):
        copying.result()
    pending.discard()
    ctx.cache_copy = None


def write_record(ctx: BuildContext) -> None:
    record = _record(ctx, ctx.progress.timings)
    (ctx.staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _record(ctx: BuildContext, timings: dict[str, float]) -> dict[str, Any]:
    archive = ctx.need_archive()
    recipe = ctx.recipe
    created = (
        ctx.hit.record.get("created")
        if ctx.hit is not None
        else ctx.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return {
        "schema": RECORD_SCHEMA,
        "image": {"name": recipe.name, "version": recipe.version},
        "created": created,
        "recipe": {
            "digest": recipe.digest,
            "sources": [str(p) for p in recipe.sources],
            "resolved": recipe.canonical(),
        },
        "base": {
            "distro": str(recipe.base.distro),
            "release": recipe.base.release,
            "version": recipe.base.version,
            "arch": str(recipe.base.arch),
            "mirror": archive.mirror,
            "security_mirror": archive.security_mirror,
            "mirror_origin": archive.origin,
            "archive": ctx.fingerprint,
        },
        "repositories": [r.to_dict() for r in ctx.repositories],
        "element_digest": ctx.element.digest if ctx.element else None,
        "tools": ctx.versions,
        "cache": {"key": ctx.key, "hit": ctx.hit is not None},
        # The OS-tree layer the DIB run started from (its key), or why none.
        "layer": (
            ctx.layer
            if ctx.layer is not None
            else (ctx.hit.record.get("layer") if ctx.hit is not None else None)
        ),
        "disk": {
            **ctx.disk,
            "files": {
                name: {
                    "format": name.rsplit(".", 1)[1],
                    "sha256": ctx.digests[name],
                    "size": path.stat().st_size,
                }
                for name, path in ctx.images.items()
            },
        },
        "boot_test": ctx.boot,
        "hardening": ctx.hardening,
        "audit": (
            ctx.audit.summary()
            if ctx.audit is not None
            else (ctx.hit.record.get("audit") if ctx.hit is not None else None)
        ),
        "timings": timings,
        "packages": ctx.packages,
    }


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[BuildContext], None]
    #: Skip the step when this says so (e.g. a cache hit).
    skip: Callable[[BuildContext], str | None] = lambda ctx: None


def _on_hit(ctx: BuildContext) -> str | None:
    return "cache hit" if ctx.hit is not None else None


def _unless_boot_test(ctx: BuildContext) -> str | None:
    return None if ctx.options.boot_test else "not asked for (--boot-test)"


STEPS: tuple[Step, ...] = (
    Step("host", "check the build host", check_host),
    Step("archive", "resolve the package archive and its freshness", resolve_base),
    Step("element", "generate the diskimage-builder element", generate_element),
    Step("cache", "look up the build cache", lookup_cache),
    Step(
        "packages",
        "check the mirror's indexes and the recipe's packages (before apt)",
        check_packages,
        _on_hit,
    ),
    Step(
        "layer",
        "reuse or build the OS-tree layer of the recipes it extends",
        prepare_layer,
        _on_hit,
    ),
    Step("dib", "build the OS tree with diskimage-builder", run_dib, _on_hit),
    Step("tree", "finish the OS tree for its disk", prepare_tree, _on_hit),
    Step("harden", "apply the hardening profile to the OS tree", harden_tree, _on_hit),
    Step("assemble", "make the bootable disk from the hardened tree", assemble_disk, _on_hit),
    Step(
        "audit",
        "audit the finished disk and read its facts (read-only; the boot test starts alongside)",
        check_disk,
        _on_hit,
    ),
    Step("label", "write the SBOM and labels.json", label_disk, _on_hit),
    Step("boot-test", "boot the image under qemu", run_boot_test, _unless_boot_test),
    Step("store", "store the build in the cache", store_cache, _on_hit),
    Step("prune", "keep the build cache within build.cache_max_size", prune_cache, _on_hit),
    Step("record", "write build.json", write_record),
)


def build(
    recipe: Recipe,
    settings: Settings,
    options: BuildOptions,
    progress: Progress,
    output_root: Path | None = None,
) -> BuildResult:
    """Run every step in a staging directory, then publish atomically."""
    # The library's boundary: tools run with other working directories
    # (diskimage-builder's ELEMENTS_PATH), so every path below is absolute.
    root = (output_root or settings.output_dir).absolute()
    destination = final_dir(root, recipe.name, recipe.version)
    progress.total = len(STEPS)
    started = time.monotonic()
    with staging_dir(root, recipe.name, recipe.version) as staging:
        with (staging / LOG_FILE).open("w", encoding="utf-8") as logfile:
            ctx = BuildContext(
                recipe=recipe,
                settings=settings,
                options=options,
                progress=progress,
                staging=staging,
                logfile=logfile,
            )
            try:
                for step in STEPS:
                    reason = step.skip(ctx)
                    if reason is not None:
                        progress.index += 1
                        continue
                    with progress.step(step.name, step.description):
                        step.run(ctx)
            except BaseException as exc:
                if ctx.boot_job is not None:
                    # Ctrl-C, SIGTERM or a failed step: qemu stops too, before cleanup.
                    ctx.boot_job.stop()
                    with contextlib.suppress(BaseException):
                        ctx.boot_job.wait()
                _discard_cache_copy(ctx)
                release_layer(ctx)
                if ctx.tree is not None:
                    # The mounted OS tree (a failed harden step): unmounted here,
                    # not found mounted by the staging directory's removal.
                    with contextlib.suppress(BaseException):
                        release_tree(ctx.tree.tree, logfile)
                logfile.flush()
                kept = _keep_failure_logs(root, ctx, staging)
                if isinstance(exc, ImageFactoryError) and kept is not None:
                    exc.hint = f"{exc.hint + '; ' if exc.hint else ''}logs kept in {kept}"
                raise
        remove_tree(staging / "elements")
        remove_tree(staging / dib.WORK_DIR_NAME)
        progress.timings["total"] = round(time.monotonic() - started, 3)
        write_record(ctx)
        record = json.loads((staging / RECORD_FILE).read_text(encoding="utf-8"))
        records = _output_records(settings)
        published = publish(
            staging,
            destination,
            replace=options.replace,
            unchanged=lambda final: output_unchanged(final, ctx.key, records),
        )
        if published:
            record_output(destination, ctx.key, records)
    return BuildResult(
        directory=destination, record=record, cache_hit=ctx.hit is not None, published=published
    )


def _keep_failure_logs(root: Path, ctx: BuildContext, staging: Path) -> Path | None:
    """Copy the logs of a failed build out of the staging directory."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = root / FAILED_DIR / f"{ctx.basename}-{stamp}"
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in (LOG_FILE, BOOT_LOG, AUDIT_FILE):
            if (staging / name).exists():
                shutil.copyfile(staging / name, target / name)
    except OSError:
        return None
    return target
