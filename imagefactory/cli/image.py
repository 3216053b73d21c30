"""``inspect`` and ``labels show|export``: commands that read an image or its labels."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from imagefactory.cli.common import (
    ROOT_POLICIES,
    STATED_FORMATS,
    Parser,
    emit_json,
    flatten,
    table,
    user_path,
)
from imagefactory.errors import EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.diskformat import DEFAULT_MAX_VIRTUAL_SIZE
    from imagefactory.diskprobe import require_file
    from imagefactory.host.accel import choose_guest_accel
    from imagefactory.host.appliance import fast_appliance
    from imagefactory.inspection import inspect_image
    from imagefactory.profiles import load_profile
    from imagefactory.progress import Progress
    from imagefactory.verify.private import stable_disk
    from imagefactory.vocab import RootPolicy

    profile = load_profile(args.profile)
    # A typo in the path is "no such file", not a hostile-image refusal.
    require_file(args.image)
    progress = Progress(total=1, quiet=args.json)
    # A user's upload is inspected on a private copy (verify/private.py).
    with (
        progress.step("inspect", f"{args.image}, read-only"),
        stable_disk(args.image, DEFAULT_MAX_VIRTUAL_SIZE) as disk,
    ):
        result = inspect_image(
            disk,
            profile,
            declared_format=args.format,
            root_policy=RootPolicy(args.root_policy),
            accel=lambda: choose_guest_accel(settings.accel, settings.cache_dir / "accel.json"),
            appliance=lambda: fast_appliance(settings.appliance_dir, progress.status),
            on_status=progress.status,
        )
    result = dataclasses.replace(result, path=args.image)  # the user's name, not our copy's
    if args.json:
        emit_json(result.to_dict())
    else:
        data = result.to_dict()
        rows = [(f"disk.{k}", v) for k, v in data["disk"].items()]
        rows += [(f"os.{k}", v) for k, v in data["os"].items()]
        rows += [(f"packages.{k}", v) for k, v in data["packages"].items()]
        table(rows)
        summary = result.audit.summary()
        sys.stdout.write(
            f"audit {profile.id} v{profile.version} (root policy {args.root_policy}): "
            f"{summary['pass']} pass, {summary['fail']} fail, {summary['warn']} warn\n"
        )
        for check in result.audit.results:
            if check.status != "pass" or args.verbose:
                sys.stdout.write(f"  {check.render()}\n")
    return EXIT_OK if result.audit.passed else EXIT_VERDICT


def cmd_labels_show(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.model.labels import Labels

    labels = Labels.read(args.image_dir)
    if args.json:
        emit_json(labels.to_dict())
        return EXIT_OK
    from imagefactory.attest.claims import claimed_signers

    vos = ", ".join(labels.vos) or "-"
    endorser = labels.get("endorser.contact") or "-"
    sys.stdout.write(f"{labels.name} {labels.version} for VO {vos}; endorser {endorser}\n")
    claims = claimed_signers(args.image_dir) if args.image_dir.is_dir() else []
    if claims:
        sys.stdout.write("attestations (claimed signers; `imagefactory verify` checks them):\n")
        for claim in claims:
            sys.stdout.write(f"  {claim.file}: {claim.signer}\n")
    else:
        sys.stdout.write("attestations: none (not signed; `imagefactory sign` signs it)\n")
    table(flatten("", labels.to_dict()))
    return EXIT_OK


def cmd_labels_export(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.labels.exports import image_list_entry, oci_annotations
    from imagefactory.model.labels import Labels

    labels = Labels.read(args.image_dir)
    if args.to == "oci":
        emit_json(oci_annotations(labels))
    else:
        emit_json(image_list_entry(labels, uri=args.uri))
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="facts and audit of any disk image, read-only, trusting nothing in it",
    )
    p.add_argument("image", type=user_path)
    p.add_argument(
        "--format",
        choices=STATED_FORMATS,
        help="the format the image must have (checked, never auto-detected)",
    )
    p.add_argument("--profile", default="worker-node-default", help="hardening profile to audit")
    p.add_argument(
        "--root-policy",
        choices=ROOT_POLICIES,
        default="none",
        help="the root policy the image claims (what the audit expects)",
    )
    p.set_defaults(func=cmd_inspect)

    labels = sub.add_parser("labels", help="an image's labels.json")
    lsub = labels.add_subparsers(dest="labels_command", required=True, parser_class=Parser)
    p = lsub.add_parser("show", parents=[common], help="validate and print labels.json")
    p.add_argument("image_dir", type=user_path, metavar="IMAGE-DIR")
    p.set_defaults(func=cmd_labels_show)
    p = lsub.add_parser(
        "export", parents=[common], help="labels as OCI annotations or a HEPiX image-list entry"
    )
    p.add_argument("image_dir", type=user_path, metavar="IMAGE-DIR")
    p.add_argument("--to", choices=["oci", "image-list"], required=True)
    p.add_argument("--uri", help="image-list: where the image can be downloaded (hv:uri)")
    p.set_defaults(func=cmd_labels_export)
