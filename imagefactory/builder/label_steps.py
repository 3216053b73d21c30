"""The harden, audit and label steps of the build (see :data:`pipeline.STEPS`).

* harden: the recipe's hardening profile applied to the finished OS tree
  before it becomes a disk, on the host, every path resolved inside the tree
  (:class:`~imagefactory.guest.tree.HostTree`: a guest symlink never leads out
  of it). No appliance is launched; the disk and its other formats are made
  from the hardened tree afterwards.
* audit: one read-only launch re-reads the finished disk: the independent
  audit of every profile item (so a hardening that did not happen fails the
  build), and, from the same launch, the facts for the labels.
* label: the SBOM and labels.json, validated against the schema.

On a cache hit none of them runs: the cache entry holds the hardened disk with
its audit, SBOM and labels (:data:`METADATA_FILES`), every file re-hashed
before use, and the key covers the profile and the code that hardens, audits
and labels (:mod:`imagefactory.builder.codekey`), so a change to either rebuilds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from imagefactory.audit import run_audit
from imagefactory.builder.context import BuildContext
from imagefactory.builder.element import install_list
from imagefactory.diskformat import check_safe
from imagefactory.errors import AuditError, BuildError
from imagefactory.guest.facts import os_facts, package_facts
from imagefactory.guest.handle import boot_mode, libguestfs_version, open_guest
from imagefactory.guest.tree import HostTree
from imagefactory.harden.apply import apply_profile
from imagefactory.host.accel import choose_guest_accel
from imagefactory.host.appliance import fast_appliance
from imagefactory.labels.make import (
    LABELS_FILE,
    DiskFacts,
    make_labels,
    write_labels,
)
from imagefactory.model.imagedir import AUDIT_NAME
from imagefactory.sbom import (
    SBOM_FILE,
    make_sbom,
    package_origins,
    sbom_ref,
    unverified_repository_packages,
)

AUDIT_FILE = AUDIT_NAME
#: What the audit and label steps write next to the disk; cached with it.
METADATA_FILES = (AUDIT_FILE, SBOM_FILE, LABELS_FILE)


def _appliance_accel(ctx: BuildContext) -> str:
    return choose_guest_accel(ctx.settings.accel, ctx.settings.cache_dir / "accel.json")


def _appliance_cpus(ctx: BuildContext) -> int:
    """Two vCPUs for the audit's appliance on a host with two cores or more, one when
    the boot test's qemu runs alongside (it takes the other core)."""
    return 1 if ctx.options.boot_test else min(2, os.cpu_count() or 1)


def _primary(ctx: BuildContext) -> tuple[str, str]:
    return ctx.primary_image, str(ctx.recipe.disk.formats[0])


def harden_tree(ctx: BuildContext) -> None:
    profile = ctx.need_profile()
    if ctx.tree is None:
        raise BuildError("internal error: the tree step has not run")
    ctx.progress.status(f"hardening the OS tree with {profile.id}")
    with HostTree(ctx.tree.tree) as tree:
        actions = apply_profile(tree, profile, ctx.recipe.root_policy)
    for action in actions:
        ctx.logfile.write(f"harden: {action}\n")
    ctx.hardening = {"profile": profile.id, "digest": profile.digest, "actions": actions}


def audit_disk(ctx: BuildContext) -> None:
    profile = ctx.need_profile()
    name, fmt = _primary(ctx)
    path = ctx.images[name]
    info = check_safe(path, declared_format=fmt)
    ctx.progress.status(f"auditing {name} read-only (libguestfs)")
    with open_guest(
        path,
        info.format,
        readonly=True,
        accel=_appliance_accel(ctx),
        smp=_appliance_cpus(ctx),
        appliance=fast_appliance(ctx.settings.appliance_dir, ctx.progress.status),
    ) as guest:
        # What the labels will declare must be true of the image (a recipe that
        # says cvmfs and installs no CVMFS client fails here).
        fs_access = tuple(str(f) for f in ctx.recipe.fs_access)
        report = run_audit(guest, profile, ctx.recipe.root_policy, fs_access=fs_access)
        facts = os_facts(guest)
        packages = package_facts(guest)
        mode = boot_mode(guest)
    ctx.audit = report
    ctx.observed = {"os": facts, "packages": packages, "boot_mode": mode, "info": info}
    (ctx.staging / AUDIT_FILE).write_text(
        json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    summary = report.summary()
    ctx.progress.note(
        f"audit {profile.id}: {summary['pass']} pass, {summary['fail']} fail, "
        f"{summary['warn']} warn"
    )
    if not report.passed:
        raise AuditError(
            f"the audit of {name} failed {len(report.failed)} required check(s): "
            + ", ".join(r.id for r in report.failed),
            [r.render() for r in report.failed],
            hint=f"see {AUDIT_FILE} for the evidence of every check",
        )


def label_disk(ctx: BuildContext) -> None:
    profile = ctx.need_profile()
    if ctx.audit is None or not ctx.observed:
        raise AuditError("internal error: the audit step has not run", [])
    name, _ = _primary(ctx)
    path = ctx.images[name]
    sums = ctx.image_digests()[name]
    sha256, sha512 = sums["sha256"], sums["sha512"]
    info = ctx.observed["info"]
    created = _created(ctx)
    facts = ctx.observed["os"]
    packages = ctx.observed["packages"]
    origins = None
    if ctx.origin_sources:
        origins = package_origins(packages.packages, ctx.origin_sources)
        stray = unverified_repository_packages(packages.packages, origins, ctx.origin_sources)
        if stray:
            raise BuildError(
                f"{name} holds {len(stray)} package(s) of a third-party repository that its"
                " verified indexes do not list: " + "; ".join(stray),
                hint="the repository published a new Release after the build verified it;"
                " build again, so the new Release is verified (and keyed) before it is used",
            )
    sbom_text = make_sbom(
        ctx.recipe.name,
        ctx.recipe.version,
        facts,
        packages.packages,
        disk_sha256=sha256,
        created=created,
        requested={p.partition("=")[0] for p in install_list(ctx.recipe)},
        repositories=[
            f"{r.repository.name} {r.repository.url} {r.repository.fingerprint}"
            for r in ctx.repositories
        ],
        origins=origins,
    )
    (ctx.staging / SBOM_FILE).write_text(sbom_text, encoding="utf-8")
    disk = DiskFacts(
        file=name,
        format=info.format,
        size=path.stat().st_size,
        virtual_size=info.virtual_size,
        sha256=sha256,
        sha512=sha512,
        boot_mode=ctx.observed["boot_mode"],
    )
    if disk.boot_mode != str(ctx.recipe.boot):
        raise BuildError(
            f"{name} boots with {disk.boot_mode} as read from the image,"
            f" but the recipe asks for boot: {ctx.recipe.boot}",
            hint="the EFI system partition or its loader is missing; see the build log",
        )
    builder: dict[str, Any] = {
        "imagefactory": ctx.versions.get("imagefactory", "unknown"),
        "diskimage-builder": ctx.versions.get("diskimage-builder", "unknown"),
        "libguestfs": libguestfs_version(),
    }
    labels = make_labels(
        ctx.recipe,
        disk=disk,
        os=facts,
        packages=packages,
        sbom=sbom_ref(sbom_text),
        audit=ctx.audit,
        profile=profile,
        builder=builder,
        created=created,
    )
    write_labels(ctx.staging, labels)


def _created(ctx: BuildContext) -> dt.datetime:
    if ctx.hit is not None and isinstance(ctx.hit.record.get("created"), str):
        return dt.datetime.strptime(ctx.hit.record["created"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC
        )
    return ctx.started
